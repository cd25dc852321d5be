import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * The inode of every directory this process has an inotify watch on, from /proc/self/fdinfo (one
 * "inotify wd:… ino:<hex>" line per watch). Every fs.watch of the process counts, not only the file
 * sensor's. Undefined when /proc cannot be read.
 */
export function processInotifyWatches(): number[] | undefined {
  let fds: string[];
  try {
    fds = readdirSync('/proc/self/fd');
  } catch {
    return undefined;
  }
  const inodes: number[] = [];
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== 'anon_inode:inotify') continue;
      for (const m of readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').matchAll(/^inotify wd:\S+ ino:([0-9a-f]+)/gm)) inodes.push(parseInt(m[1], 16));
    } catch {
      // The fd was closed between listing and reading.
    }
  }
  return inodes;
}
