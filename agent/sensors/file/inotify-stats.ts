import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * inotify watches this process holds in the kernel, counted from /proc/self/fdinfo (one "inotify wd:"
 * line per watch). Every fs.watch of the process counts, not only the file sensor's; -1 when unreadable.
 */
export function countProcessInotifyWatches(): number {
  let fds: string[];
  try {
    fds = readdirSync('/proc/self/fd');
  } catch {
    return -1;
  }
  let watches = 0;
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== 'anon_inode:inotify') continue;
      for (const line of readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n')) if (line.startsWith('inotify wd:')) watches++;
    } catch {
      // The fd was closed between listing and reading.
    }
  }
  return watches;
}
