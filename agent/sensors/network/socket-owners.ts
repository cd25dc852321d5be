import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { ContainerInfo, ProcessSummary } from '../../events/types.js';

export interface SocketOwner {
  containerId: string;
  process: ProcessSummary;
}

export interface SocketOwnerFinderOptions {
  procRoot: string;
  /** Where the cgroup hierarchies are mounted (v1: one folder per controller; v2: the unified tree). */
  cgroupRoot: string;
  /** Upper bound of /proc/<pid>/fd links read per call (bounded work; what is left is counted). */
  maxFdReads: number;
}

/**
 * Where a container's cgroup.procs may be, from its init process's /proc/<pid>/cgroup: the v1 pids or
 * memory hierarchy first, then v2 (unified mount for hybrid hosts, else the root). Covers --cgroup-parent
 * and the systemd driver since the kernel reports the real path.
 */
export function cgroupProcsCandidates(procCgroup: string, cgroupRoot: string): string[] {
  const v1: string[] = [];
  const v2: string[] = [];
  for (const line of procCgroup.split('\n')) {
    const m = /^(\d+):([^:]*):(\/.*)$/.exec(line.trim());
    if (!m) continue;
    const [, hierarchy, controllers, cgPath] = m;
    if (hierarchy === '0' && controllers === '') {
      v2.push(path.join(cgroupRoot, 'unified', cgPath, 'cgroup.procs'), path.join(cgroupRoot, cgPath, 'cgroup.procs'));
    } else {
      const list = controllers.split(',');
      if (list.includes('pids')) v1.unshift(path.join(cgroupRoot, controllers, cgPath, 'cgroup.procs'));
      else if (list.includes('memory')) v1.push(path.join(cgroupRoot, controllers, cgPath, 'cgroup.procs'));
    }
  }
  return [...v1, ...v2];
}

/**
 * Finds which process of which container holds a socket: socket inode → `socket:[inode]` link in
 * /proc/<pid>/fd of the container's processes. Processes come from the container's cgroup, not from the
 * init process's children, so `docker exec`'d processes are found too.
 */
export class SocketOwnerFinder {
  /** Container id + init pid → its cgroup.procs file. */
  private readonly procsFile = new Map<string, string>();
  /** Container id → pids that held the sockets found last time: new sockets mostly belong to them, so they are read first. */
  private readonly recentOwners = new Map<string, number[]>();
  readonly stats = { fdReads: 0, truncated: 0, cgroupMissing: 0, processGone: 0 };

  constructor(private readonly opts: SocketOwnerFinderOptions) {}

  /** Host pids of the container's processes; [] when its cgroup is gone. */
  containerPids(info: ContainerInfo): number[] {
    const key = `${info.id}:${info.pid}`;
    const known = this.procsFile.get(key);
    if (known) return readPids(known) ?? [];
    let cgroup: string;
    try {
      cgroup = readFileSync(path.join(this.opts.procRoot, String(info.pid), 'cgroup'), 'latin1');
    } catch {
      this.stats.cgroupMissing++;
      return [info.pid];
    }
    for (const candidate of cgroupProcsCandidates(cgroup, this.opts.cgroupRoot)) {
      const pids = readPids(candidate);
      if (pids) {
        this.procsFile.set(key, candidate);
        return pids;
      }
    }
    this.stats.cgroupMissing++;
    return [info.pid];
  }

  /** Forgets what it cached about a container (it stopped or restarted). */
  forget(containerId: string): void {
    for (const key of this.procsFile.keys()) if (key.startsWith(`${containerId}:`)) this.procsFile.delete(key);
    this.recentOwners.delete(containerId);
  }

  /** Owners of as many of `inodes` as the fd budget allows, searching the given containers' processes in order. */
  find(inodes: ReadonlySet<number>, containers: readonly ContainerInfo[]): Map<number, SocketOwner> {
    const found = new Map<number, SocketOwner>();
    let budget = this.opts.maxFdReads;
    for (const c of containers) {
      const pids = this.containerPids(c);
      const recent = (this.recentOwners.get(c.id) ?? []).filter((p) => pids.includes(p));
      const owners = new Set<number>();
      for (const pid of new Set([...recent, ...pids])) {
        if (found.size === inodes.size) break;
        const fdDir = path.join(this.opts.procRoot, String(pid), 'fd');
        let fds: string[];
        try {
          fds = readdirSync(fdDir);
        } catch {
          this.stats.processGone++;
          continue;
        }
        let summary: ProcessSummary | undefined;
        for (const fd of fds) {
          if (budget-- <= 0) {
            this.stats.truncated++;
            return found;
          }
          this.stats.fdReads++;
          let link: string;
          try {
            link = readlinkSync(path.join(fdDir, fd));
          } catch {
            continue;
          }
          if (!link.startsWith('socket:[')) continue;
          const inode = Number(link.slice(8, -1));
          if (!inodes.has(inode) || found.has(inode)) continue;
          summary ??= this.processSummary(pid);
          found.set(inode, { containerId: c.id, process: summary });
          owners.add(pid);
        }
      }
      if (owners.size) this.recentOwners.set(c.id, [...owners, ...recent.filter((p) => !owners.has(p))].slice(0, 8));
      if (found.size === inodes.size) break;
    }
    return found;
  }

  private processSummary(pid: number): ProcessSummary {
    const dir = path.join(this.opts.procRoot, String(pid));
    let exe = '';
    let args: string[] = [];
    try {
      exe = readlinkSync(path.join(dir, 'exe'));
    } catch {
      // Kernel threads and exited processes have no exe; the pid still says who.
    }
    try {
      args = readFileSync(path.join(dir, 'cmdline'), 'utf8').split('\0');
      if (args.at(-1) === '') args.pop();
    } catch {
      // Same as above.
    }
    return { pid, exe, args };
  }
}

function readPids(file: string): number[] | undefined {
  try {
    return readFileSync(file, 'latin1')
      .split('\n')
      .filter((l) => l !== '')
      .map(Number);
  } catch {
    return undefined;
  }
}
