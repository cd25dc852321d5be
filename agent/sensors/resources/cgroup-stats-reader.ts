import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { RunwatchError } from '../../errors.js';
import type { ContainerInfo } from '../../events/types.js';
import { figuresFromV1, figuresFromV2, parseNetDev, parseProcCgroup, type CgroupFigures, type ContainerReading, type FileText } from './cgroup-parsers.js';
import { ContainerGoneError, ownsNetwork, type ContainerStatsReader } from './stats-reader.js';

export type CgroupVersion = 1 | 2;

/** v2 when the root is a unified hierarchy; v1 when the per-controller hierarchies are mounted under it. */
export function detectCgroupVersion(root: string): CgroupVersion | undefined {
  if (existsSync(path.join(root, 'cgroup.controllers'))) return 2;
  if (existsSync(path.join(root, 'memory')) && existsSync(path.join(root, 'cpuacct'))) return 1;
  return undefined;
}

export interface CgroupStatsReaderOptions {
  /** Where the cgroup hierarchies are mounted. */
  cgroupRoot?: string;
  procRoot?: string;
}

/**
 * Reads a container's figures straight from its cgroup files and its network namespace's /proc/<pid>/net/dev.
 * Reads are synchronous on purpose: cgroupfs and procfs files are generated in memory and never wait on a
 * disk, and a plain read costs less than a hop through libuv's thread pool.
 */
export class CgroupStatsReader implements ContainerStatsReader {
  readonly source = 'cgroup' as const;
  readonly version: CgroupVersion | undefined;
  private readonly root: string;
  private readonly proc: string;
  /** Container id → its cgroup path relative to a hierarchy's root, e.g. "/docker/<id>". */
  private readonly dirs = new Map<string, string>();

  constructor(opts: CgroupStatsReaderOptions = {}) {
    this.root = opts.cgroupRoot ?? '/sys/fs/cgroup';
    this.proc = opts.procRoot ?? '/proc';
    this.version = detectCgroupVersion(this.root);
  }

  /**
   * The container's cgroup path, or undefined when none is found. Tries the path its init process reports
   * (covers custom --cgroup-parent and systemd slices), then Docker's cgroupfs and systemd conventions.
   */
  locate(info: ContainerInfo): string | undefined {
    if (!this.version) return undefined;
    const known = this.dirs.get(info.id);
    if (known) return known;
    const parent = info.cgroupParent ? '/' + info.cgroupParent.replace(/^\/+|\/+$/g, '') : undefined;
    const candidates = [this.fromProc(info.pid), `${parent ?? '/docker'}/${info.id}`, `${parent ?? '/system.slice'}/docker-${info.id}.scope`];
    for (const rel of candidates) {
      if (rel === undefined || !rel.includes(info.id)) continue;
      if (existsSync(this.version === 1 ? path.join(this.root, 'memory', rel) : path.join(this.root, rel))) {
        this.dirs.set(info.id, rel);
        return rel;
      }
    }
    return undefined;
  }

  async read(info: ContainerInfo): Promise<ContainerReading> {
    const rel = this.locate(info);
    if (!rel) {
      if (info.pid <= 0 || !existsSync(path.join(this.proc, String(info.pid)))) throw new ContainerGoneError(info.id);
      throw new RunwatchError('RW_SENSOR', `no cgroup found for running container ${info.id.slice(0, 12)} (pid ${info.pid}) under ${this.root}`);
    }
    try {
      const figures = this.version === 1 ? this.readV1(rel) : this.readV2(rel);
      const reading: ContainerReading = { ...figures, atMs: performance.timeOrigin + performance.now() };
      if (ownsNetwork(info) && info.pid > 0) {
        const net = parseNetDev(readText(path.join(this.proc, String(info.pid), 'net/dev')));
        reading.networkRxBytes = net.rx;
        reading.networkTxBytes = net.tx;
      }
      return reading;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') {
        this.dirs.delete(info.id);
        throw new ContainerGoneError(info.id, { cause: err });
      }
      throw err;
    }
  }

  retain(live: ReadonlySet<string>): void {
    for (const id of this.dirs.keys()) if (!live.has(id)) this.dirs.delete(id);
  }

  private readV1(rel: string): CgroupFigures {
    const at = (controller: string, file: string) => readText(path.join(this.root, controller, rel, file));
    return figuresFromV1({
      cpuacctUsage: at('cpuacct', 'cpuacct.usage'),
      memoryUsage: at('memory', 'memory.usage_in_bytes'),
      memoryLimit: at('memory', 'memory.limit_in_bytes'),
      memoryStat: at('memory', 'memory.stat'),
      blkio: at('blkio', 'blkio.throttle.io_service_bytes_recursive'),
      pids: at('pids', 'pids.current'),
    });
  }

  private readV2(rel: string): CgroupFigures {
    const at = (file: string) => readText(path.join(this.root, rel, file));
    return figuresFromV2({
      cpuStat: at('cpu.stat'),
      memoryCurrent: at('memory.current'),
      memoryMax: at('memory.max'),
      memoryStat: at('memory.stat'),
      ioStat: at('io.stat'),
      pidsCurrent: at('pids.current'),
    });
  }

  private fromProc(pid: number): string | undefined {
    if (pid <= 0 || !this.version) return undefined;
    try {
      return parseProcCgroup(readFileSync(path.join(this.proc, String(pid), 'cgroup'), 'latin1'), this.version);
    } catch {
      return undefined; // exited already; the conventional paths are tried next
    }
  }
}

const scratch = Buffer.allocUnsafe(64 * 1024);

/**
 * open + read into one reused buffer + close: a third of readFileSync's cost on these files (no fstat, no
 * per-call buffers), measured at ~20 µs against ~70 µs per file. Larger files take the ordinary path.
 */
function readText(p: string): FileText {
  const fd = openSync(p, 'r');
  try {
    let n = 0;
    for (let r; n < scratch.length && (r = readSync(fd, scratch, n, scratch.length - n, null)) > 0;) n += r;
    return { path: p, text: n < scratch.length ? scratch.toString('latin1', 0, n) : readFileSync(p, 'latin1') };
  } finally {
    closeSync(fd);
  }
}
