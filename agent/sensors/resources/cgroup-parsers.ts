import { RunwatchError } from '../../errors.js';

/**
 * Pure parsers for the cgroup (v1 and v2) and procfs files the resource sensor reads. Each takes the file's
 * text and its path (for the error); malformed content throws a RunwatchError naming file, line and field.
 */

/** Cumulative figures of one container, as its cgroup or the Docker stats API reports them. */
export interface ContainerReading {
  /** Cumulative CPU time in ns. */
  cpuUsageNs: number;
  /** Epoch ms (fractional) at which the figures were read. */
  atMs: number;
  /** Usage minus the inactive file cache: what `docker stats` shows, the part the kernel cannot just drop. */
  memoryBytes: number;
  /** The kernel-enforced limit; Infinity (v2 "max") or a huge number (v1) when there is none. */
  memoryLimitBytes: number;
  blockReadBytes: number;
  blockWriteBytes: number;
  pids: number;
  /** Cumulative, all interfaces but lo; absent when the container shares another network namespace. */
  networkRxBytes?: number;
  networkTxBytes?: number;
}

export type CgroupFigures = Omit<ContainerReading, 'atMs' | 'networkRxBytes' | 'networkTxBytes'>;

export interface CgroupV1Files {
  /** cpuacct/…/cpuacct.usage */
  cpuacctUsage: FileText;
  /** memory/…/memory.usage_in_bytes */
  memoryUsage: FileText;
  /** memory/…/memory.limit_in_bytes */
  memoryLimit: FileText;
  /** memory/…/memory.stat */
  memoryStat: FileText;
  /** blkio/…/blkio.throttle.io_service_bytes_recursive */
  blkio: FileText;
  /** pids/…/pids.current */
  pids: FileText;
}

export interface CgroupV2Files {
  cpuStat: FileText;
  memoryCurrent: FileText;
  memoryMax: FileText;
  memoryStat: FileText;
  ioStat: FileText;
  pidsCurrent: FileText;
}

export interface FileText {
  path: string;
  text: string;
}

function malformed(file: FileText, line: number | undefined, field: string, what: string): RunwatchError {
  return new RunwatchError('RW_SENSOR', `malformed cgroup file: ${what}`, { file: file.path, line, field });
}

function toNumber(s: string, file: FileText, line: number, field: string): number {
  if (!/^\d+$/.test(s)) throw malformed(file, line, field, `expected a non-negative integer, got "${s.slice(0, 40)}"`);
  return Number(s);
}

/** A file holding one integer (v2 "max" = Infinity). */
export function parseSingleValue(file: FileText, field: string): number {
  const s = file.text.trim();
  return s === 'max' ? Infinity : toNumber(s, file, 1, field);
}

/** "key value" lines (memory.stat, cpu.stat) → the values of the keys asked for; a missing key is an error. */
export function parseFlatKeyed<K extends string>(file: FileText, keys: readonly K[]): Record<K, number> {
  const wanted = new Set<string>(keys);
  const out = {} as Record<K, number>;
  const lines = file.text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const sp = lines[i].indexOf(' ');
    if (sp < 0) continue;
    const key = lines[i].slice(0, sp);
    if (wanted.has(key)) out[key as K] = toNumber(lines[i].slice(sp + 1).trim(), file, i + 1, key);
  }
  for (const k of keys) if (out[k] === undefined) throw malformed(file, undefined, k, `key "${k}" missing`);
  return out;
}

/** blkio.throttle.io_service_bytes_recursive: "MAJ:MIN Read N" lines per device, then "Total N". */
export function parseBlkioV1(file: FileText): { read: number; write: number } {
  let read = 0;
  let write = 0;
  const lines = file.text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const parts = lines[i].trim().split(/\s+/);
    if (parts.length !== 3) continue; // "Total N" and blank lines
    if (parts[1] === 'Read') read += toNumber(parts[2], file, i + 1, 'Read');
    else if (parts[1] === 'Write') write += toNumber(parts[2], file, i + 1, 'Write');
  }
  return { read, write };
}

/** io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N …" per device. */
export function parseIoStatV2(file: FileText): { read: number; write: number } {
  let read = 0;
  let write = 0;
  const lines = file.text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    for (const kv of lines[i].trim().split(/\s+/).slice(1)) {
      const eq = kv.indexOf('=');
      const key = kv.slice(0, eq);
      if (key === 'rbytes') read += toNumber(kv.slice(eq + 1), file, i + 1, key);
      else if (key === 'wbytes') write += toNumber(kv.slice(eq + 1), file, i + 1, key);
    }
  }
  return { read, write };
}

/**
 * /proc/<pid>/net/dev → bytes summed over every interface except lo. Loopback traffic never leaves the
 * container and is counted as both rx and tx; Docker's stats API leaves it out too.
 */
export function parseNetDev(file: FileText): { rx: number; tx: number } {
  let rx = 0;
  let tx = 0;
  const lines = file.text.split('\n');
  for (let i = 2; i < lines.length; i++) {
    const colon = lines[i].indexOf(':');
    if (colon < 0) continue;
    const iface = lines[i].slice(0, colon).trim();
    if (iface === 'lo') continue;
    const cols = lines[i]
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    if (cols.length < 16) throw malformed(file, i + 1, iface, `expected 16 counters, got ${cols.length}`);
    rx += toNumber(cols[0], file, i + 1, `${iface}.rx_bytes`);
    tx += toNumber(cols[8], file, i + 1, `${iface}.tx_bytes`);
  }
  return { rx, tx };
}

/**
 * /proc/<pid>/cgroup → the process's cgroup path: the memory controller's line on v1, the "0::" line on v2.
 * Undefined when the line is not there.
 */
export function parseProcCgroup(text: string, version: 1 | 2): string | undefined {
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const matches = version === 2 ? line.slice(0, first) === '0' && controllers === '' : controllers.split(',').includes('memory');
    if (matches) return line.slice(second + 1);
  }
  return undefined;
}

export function figuresFromV1(f: CgroupV1Files): CgroupFigures {
  const usage = parseSingleValue(f.memoryUsage, 'memory.usage_in_bytes');
  const { total_inactive_file } = parseFlatKeyed(f.memoryStat, ['total_inactive_file']);
  const io = parseBlkioV1(f.blkio);
  return {
    cpuUsageNs: parseSingleValue(f.cpuacctUsage, 'cpuacct.usage'),
    memoryBytes: Math.max(0, usage - total_inactive_file),
    memoryLimitBytes: parseSingleValue(f.memoryLimit, 'memory.limit_in_bytes'),
    blockReadBytes: io.read,
    blockWriteBytes: io.write,
    pids: parseSingleValue(f.pids, 'pids.current'),
  };
}

export function figuresFromV2(f: CgroupV2Files): CgroupFigures {
  const current = parseSingleValue(f.memoryCurrent, 'memory.current');
  const { inactive_file } = parseFlatKeyed(f.memoryStat, ['inactive_file']);
  const io = parseIoStatV2(f.ioStat);
  return {
    cpuUsageNs: parseFlatKeyed(f.cpuStat, ['usage_usec']).usage_usec * 1000,
    memoryBytes: Math.max(0, current - inactive_file),
    memoryLimitBytes: parseSingleValue(f.memoryMax, 'memory.max'),
    blockReadBytes: io.read,
    blockWriteBytes: io.write,
    pids: parseSingleValue(f.pidsCurrent, 'pids.current'),
  };
}
