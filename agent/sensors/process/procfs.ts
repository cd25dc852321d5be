import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** What /proc tells of a process, read from JS (initial scan and the polling fallback). */
export interface ProcfsProcess {
  pid: number;
  ppid: number;
  uid: number;
  exe: string;
  exeDeleted: boolean;
  args: string[];
  comm: string;
  containerId: string;
  /** Start time in clock ticks since boot: with the pid, identifies one process across pid reuse. */
  startTicks: number;
}

const CONTAINER_ID = /(?:\/docker[/-]|docker-)([0-9a-f]{64})(?:\.scope)?/;

/** The 64-hex container id in /proc/<pid>/cgroup content: cgroup v1 "N:ctrl:/docker/<id>", v2 "0::/docker/<id>" or "0::/system.slice/docker-<id>.scope". */
export function containerIdFromCgroup(content: string): string {
  for (const line of content.split('\n')) {
    const m = CONTAINER_ID.exec(line);
    if (m) return m[1];
  }
  return '';
}

export function listPids(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    const c = name.charCodeAt(0);
    if (c >= 48 && c <= 57) out.push(Number(name));
  }
  return out;
}

/** Reads one process; undefined when it is gone (or a kernel thread without an executable). */
export function readProcess(pid: number): ProcfsProcess | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    const ppid = Number(fields[1]);
    const startTicks = Number(fields[19]);
    let exe = '';
    try {
      exe = readlinkSync(`/proc/${pid}/exe`);
    } catch {
      return undefined; // kernel thread or gone
    }
    const exeDeleted = exe.endsWith(' (deleted)') || exe.startsWith('/memfd:');
    if (exe.endsWith(' (deleted)')) exe = exe.slice(0, -' (deleted)'.length);
    const args = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    if (args.length && args[args.length - 1] === '') args.pop();
    const status = readFileSync(`/proc/${pid}/status`, 'latin1');
    const uidLine = /^Uid:\s+(\d+)/m.exec(status);
    const containerId = containerIdFromCgroup(readFileSync(`/proc/${pid}/cgroup`, 'latin1'));
    return { pid, ppid, uid: uidLine ? Number(uidLine[1]) : -1, exe, exeDeleted, args, comm, containerId, startTicks };
  } catch {
    return undefined;
  }
}

/** "pts/3" for a tty_nr from /proc/<pid>/stat (major 136–143 = pts, 4 = tty, 5 = console/ptmx); undefined for none. */
export function ttyName(ttyNr: number): string | undefined {
  if (!ttyNr) return undefined;
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00);
  if (major >= 136 && major <= 143) return `pts/${(major - 136) * 256 + minor}`;
  if (major === 4) return minor < 64 ? `tty${minor}` : `ttyS${minor - 64}`;
  return `tty(${major}:${minor})`;
}
