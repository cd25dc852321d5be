import type { ProcessAncestor } from '../../events/types.js';

/** What runwatch remembers of one process. */
export interface ProcessEntry {
  pid: number;
  ppid: number;
  /** "" for host processes. */
  containerId: string;
  exe: string;
  args: string[];
  comm: string;
  uid: number;
  /** When this pid became this process (fork or first sight), epoch ms: tells a reused pid apart. */
  since: number;
  exited?: number;
}

/**
 * pid → process, kept current by fork (the child inherits its parent's container and image, so a process
 * that exits before /proc can be read is still attributed), exec and exit. pids are reused (pid_max can be
 * 32768): a fork of a known pid replaces the old entry. Exited processes stay a short while so that the
 * ancestry of their children still resolves; the table is bounded, oldest exited first.
 */
export class ProcessTable {
  private readonly byPid = new Map<number, ProcessEntry>();
  private readonly exitedOrder: number[] = [];

  constructor(
    private readonly maxEntries = 131_072,
    private readonly keepExitedMs = 30_000,
  ) {}

  get size(): number {
    return this.byPid.size;
  }

  get(pid: number): ProcessEntry | undefined {
    return this.byPid.get(pid);
  }

  set(entry: ProcessEntry): void {
    this.byPid.set(entry.pid, entry);
    this.bound();
  }

  fork(parentPid: number, childPid: number, ts: number): ProcessEntry {
    const parent = this.byPid.get(parentPid);
    const child: ProcessEntry = {
      pid: childPid,
      ppid: parentPid,
      containerId: parent?.containerId ?? '',
      exe: parent?.exe ?? '',
      args: parent?.args ?? [],
      comm: parent?.comm ?? '',
      uid: parent?.uid ?? -1,
      since: ts,
    };
    this.set(child);
    return child;
  }

  /** Updates (or creates) the entry of an exec'ing process. Fields left undefined keep what fork inherited. */
  exec(pid: number, ts: number, facts: Partial<Omit<ProcessEntry, 'pid' | 'since'>>): ProcessEntry {
    const cur = this.byPid.get(pid);
    const entry: ProcessEntry = cur && !cur.exited ? cur : { pid, ppid: facts.ppid ?? 0, containerId: '', exe: '', args: [], comm: '', uid: -1, since: ts };
    if (facts.ppid) entry.ppid = facts.ppid;
    if (facts.containerId) entry.containerId = facts.containerId;
    if (facts.exe) entry.exe = facts.exe;
    if (facts.args && facts.args.length) entry.args = facts.args;
    if (facts.comm) entry.comm = facts.comm;
    if (facts.uid !== undefined && facts.uid >= 0) entry.uid = facts.uid;
    this.set(entry);
    return entry;
  }

  exit(pid: number, ts: number): void {
    const e = this.byPid.get(pid);
    if (!e || e.exited) return;
    e.exited = ts;
    this.exitedOrder.push(pid);
    this.prune(ts);
  }

  /** Parent chain, nearest first, at most `max` long (no cycles even if pids were reused oddly). */
  ancestors(pid: number, max: number): ProcessAncestor[] {
    const out: ProcessAncestor[] = [];
    const seen = new Set<number>([pid]);
    let cur = this.byPid.get(pid)?.ppid ?? 0;
    while (cur > 0 && out.length < max && !seen.has(cur)) {
      seen.add(cur);
      const e = this.byPid.get(cur);
      if (!e) {
        out.push({ pid: cur, exe: '' });
        break;
      }
      out.push(e.comm ? { pid: e.pid, exe: e.exe, comm: e.comm } : { pid: e.pid, exe: e.exe });
      cur = e.ppid;
    }
    return out;
  }

  /** The most recently started live process of a container (named on file and network events). */
  latestIn(containerId: string): ProcessEntry | undefined {
    let best: ProcessEntry | undefined;
    for (const e of this.byPid.values()) if (e.containerId === containerId && !e.exited && (!best || e.since > best.since)) best = e;
    return best;
  }

  private prune(now: number): void {
    while (this.exitedOrder.length) {
      const pid = this.exitedOrder[0];
      const e = this.byPid.get(pid);
      if (e?.exited && now - e.exited < this.keepExitedMs) break;
      this.exitedOrder.shift();
      if (e?.exited) this.byPid.delete(pid);
    }
  }

  private bound(): void {
    if (this.byPid.size <= this.maxEntries) return;
    // Over the bound: drop exited entries first, then the oldest.
    while (this.byPid.size > this.maxEntries && this.exitedOrder.length) {
      const pid = this.exitedOrder.shift()!;
      if (this.byPid.get(pid)?.exited) this.byPid.delete(pid);
    }
    for (const pid of this.byPid.keys()) {
      if (this.byPid.size <= this.maxEntries) break;
      this.byPid.delete(pid);
    }
  }
}
