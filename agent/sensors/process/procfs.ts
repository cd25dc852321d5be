import { closeSync, constants, fstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';

/** What /proc/<pid>/stat tells cheaply: enough to tell whether a process is new since the last look. */
export interface ProcfsStat {
  pid: number;
  ppid: number;
  comm: string;
  /** tty_nr; 0 = no controlling terminal. */
  tty: number;
  /** Start time in clock ticks since boot: with the pid, identifies one process across pid reuse. */
  startTicks: number;
}

/** What /proc tells of a process, read from JS (initial scan and the polling fallback). */
export interface ProcfsProcess extends ProcfsStat {
  uid: number;
  exe: string;
  exeDeleted: boolean;
  args: string[];
  /** 64-hex container id, "" for host processes. */
  containerId: string;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102);
}

/**
 * The 64-hex container id in /proc/<pid>/cgroup content, "" for none: cgroup v1 "N:ctrl:/docker/<id>",
 * v2 "0::/docker/<id>", the systemd driver's "0::/system.slice/docker-<id>.scope", and containerd/Kubernetes
 * layouts alike. The first match wins: in a nested engine ("/docker/<outer>/docker/<inner>") the outer id is
 * the one the host's engine knows. The native reader (proc_connector.cc, ContainerIdFromCgroup) parses the
 * same way; test/unit/sensors/process/procfs.test.ts holds both to the same cases.
 */
export function containerIdFromCgroup(content: string): string {
  for (const line of content.split('\n')) {
    const c1 = line.indexOf(':');
    const c2 = c1 < 0 ? -1 : line.indexOf(':', c1 + 1);
    if (c2 < 0) continue;
    for (let i = c2 + 1; i < line.length;) {
      if (!isHex(line.charCodeAt(i))) {
        i++;
        continue;
      }
      let j = i;
      while (j < line.length && isHex(line.charCodeAt(j))) j++;
      const before = line[i - 1];
      const after = line[j];
      if (j - i === 64 && (before === '/' || before === '-') && (after === undefined || after === '/' || after === '.')) return line.slice(i, j);
      i = j;
    }
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

/** Parses /proc/<pid>/stat content; the comm may hold spaces and parentheses, so the fields start after the last ")". */
export function parseStat(pid: number, stat: string): ProcfsStat | undefined {
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  // Field 3 (state) is index 0: ppid is field 4, tty_nr 7, starttime 22.
  const fields = stat.slice(close + 2).split(' ');
  if (fields.length < 20) return undefined;
  return { pid, ppid: Number(fields[1]), comm: stat.slice(open + 1, close), tty: Number(fields[4]), startTicks: Number(fields[19]) };
}

export function readStat(pid: number): ProcfsStat | undefined {
  try {
    return parseStat(pid, readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Reads one process; undefined when it is gone or is a kernel thread (no executable). */
export function readProcess(pid: number, stat = readStat(pid)): ProcfsProcess | undefined {
  if (!stat) return undefined;
  try {
    let exe = readlinkSync(`/proc/${pid}/exe`);
    const exeDeleted = exe.endsWith(' (deleted)') || exe.startsWith('/memfd:');
    if (exe.endsWith(' (deleted)')) exe = exe.slice(0, -' (deleted)'.length);
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (args.length && args[args.length - 1] === '') args.pop();
    const uidLine = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    const containerId = containerIdFromCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
    return { ...stat, uid: uidLine ? Number(uidLine[1]) : -1, exe, exeDeleted, args, containerId };
  } catch {
    return undefined;
  }
}

/** "pts/3" for a tty_nr from /proc/<pid>/stat (major 136–143 = pts, 4 = tty/ttyS, 5:1 = console); undefined for none. */
export function ttyName(ttyNr: number): string | undefined {
  if (!ttyNr) return undefined;
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >>> 12) & 0xfff00);
  if (major >= 136 && major <= 143) return `pts/${(major - 136) * 256 + minor}`;
  if (major === 4) return minor < 64 ? `tty${minor}` : `ttyS${minor - 64}`;
  if (major === 5 && minor === 1) return 'console';
  return `tty(${major}:${minor})`;
}

/** uid → user name from /etc/passwd content; the first entry of a uid wins, as for getpwuid. */
export function parsePasswd(text: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && f[0] && /^\d+$/.test(f[2]) && !out.has(Number(f[2]))) out.set(Number(f[2]), f[0]);
  }
  return out;
}

// Node does not export O_PATH; this is its value on x86-64 and arm64.
const O_PATH = 0o10000000;

/**
 * A small regular file under `root` (a container's merged rootfs on the host), or undefined. The container
 * owns every name below `root`: a symlink there would be followed on the host (passwd -> /etc/shadow), a FIFO
 * would block the agent, and opening a device node it made (CAP_MKNOD is a default) could have side effects.
 * So no symlink is followed, and the file is opened for reading only after fstat on an O_PATH handle
 * (which opens nothing) shows a regular file.
 */
export function readFileBeneath(root: string, rel: string, maxBytes = 1 << 20): string | undefined {
  const fds: number[] = [];
  try {
    fds.push(openSync(root, O_PATH | constants.O_DIRECTORY));
    const parts = rel.split('/').filter(Boolean);
    for (const [i, part] of parts.entries()) {
      const last = i === parts.length - 1;
      if (part === '..' || part === '.') return undefined;
      fds.push(openSync(`/proc/self/fd/${fds[fds.length - 1]}/${part}`, O_PATH | constants.O_NOFOLLOW | (last ? 0 : constants.O_DIRECTORY)));
    }
    const handle = fds[fds.length - 1];
    const st = fstatSync(handle);
    if (!st.isFile() || st.size > maxBytes) return undefined;
    const fd = openSync(`/proc/self/fd/${handle}`, constants.O_RDONLY | constants.O_NOCTTY);
    fds.push(fd);
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < buf.length) {
      const r = readSync(fd, buf, n, buf.length - n, n);
      if (r === 0) break;
      n += r;
    }
    return buf.toString('utf8', 0, n);
  } catch {
    return undefined;
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
