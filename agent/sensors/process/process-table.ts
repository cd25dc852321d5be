import type { ProcessAncestor } from '../../events/types.js';

/** What runwatch remembers of one process. */
export interface ProcessEntry {
  pid: number;
  ppid: number;
  /** "" for host processes. */
  containerId: string;
  /** "" when not known (e.g. the process exited before it could be read). */
  exe: string;
  args: string[];
  comm: string;
  /** -1 when not known. */
  uid: number;
  /** When this pid became this process (fork, or its start time when first seen by a scan), epoch ms: tells a reused pid apart. */
  since: number;
  /** Set, even if undefined, on every entry the table makes: one object shape keeps the hot paths optimised. */
  exited?: number;
}

/** What an exec tells about the new program; `exe`/`args`/`comm` replace the old program's, the rest keep what is known when absent. */
export interface ExecFacts {
  ppid?: number;
  containerId?: string;
  exe: string;
  args: string[];
  comm: string;
  uid?: number;
}

export interface ProcessTableOptions {
  /** Upper bound of entries; past it exited entries go first, then the oldest. */
  maxEntries?: number;
  /** How long an exited process stays, so the ancestry of its children still resolves. */
  keepExitedMs?: number;
}

/**
 * pid → process, kept current by fork (the child inherits its parent's container, so a process that exits
 * before /proc can be read is still attributed), exec and exit. pids are reused (pid_max can be 32768): a
 * fork of a known pid replaces the old entry, and an ancestor that started after its descendant is a reused
 * pid, not the parent. Bounded.
 */
export class ProcessTable {
  private readonly byPid = new Map<number, ProcessEntry>();
  /** Exited entries in exit order, pruned from the front. */
  private readonly exitedOrder: ProcessEntry[] = [];
  /** Per container, the most recently started live process (a cache in front of a scan of the table). */
  private readonly latest = new Map<string, ProcessEntry>();
  private readonly maxEntries: number;
  private readonly keepExitedMs: number;

  constructor(opts: ProcessTableOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 131_072;
    this.keepExitedMs = opts.keepExitedMs ?? 30_000;
  }

  get size(): number {
    return this.byPid.size;
  }

  get(pid: number): ProcessEntry | undefined {
    return this.byPid.get(pid);
  }

  /** Adds a process found by a scan of /proc. */
  set(entry: ProcessEntry): void {
    this.byPid.set(entry.pid, entry);
    this.noteStarted(entry);
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
      exited: undefined,
    };
    this.set(child);
    return child;
  }

  /** Updates the entry of an exec'ing process, or creates it (with `ts` as its start) when its fork was not seen. */
  exec(pid: number, ts: number, facts: ExecFacts): ProcessEntry {
    const cur = this.byPid.get(pid);
    const entry: ProcessEntry =
      cur && !cur.exited ? cur : { pid, ppid: 0, containerId: '', exe: '', args: [], comm: '', uid: -1, since: ts, exited: undefined };
    if (facts.ppid) entry.ppid = facts.ppid;
    if (facts.containerId) entry.containerId = facts.containerId;
    entry.exe = facts.exe;
    entry.args = facts.args;
    entry.comm = facts.comm;
    if (facts.uid !== undefined && facts.uid >= 0) entry.uid = facts.uid;
    if (entry !== cur) this.set(entry);
    else this.noteStarted(entry);
    return entry;
  }

  exit(pid: number, ts: number): void {
    const e = this.byPid.get(pid);
    if (!e || e.exited) return;
    e.exited = ts;
    this.exitedOrder.push(e);
    if (this.latest.get(e.containerId) === e) this.latest.delete(e.containerId);
    this.prune(ts);
  }

  /** Parent chain, nearest first, at most `max` long; ends at an unknown parent (named by pid only) or a reused pid. */
  ancestors(pid: number, max: number): ProcessAncestor[] {
    const out: ProcessAncestor[] = [];
    let child = this.byPid.get(pid);
    // A loop (only pid reuse could make one) ends the chain; `out` is short, so no Set is allocated per exec.
    const seen = (p: number) => p === pid || out.some((a) => a.pid === p);
    while (child && child.ppid > 0 && out.length < max && !seen(child.ppid)) {
      const parent = this.byPid.get(child.ppid);
      if (!parent || parent.since > child.since) {
        out.push({ pid: child.ppid, exe: '', comm: undefined });
        break;
      }
      out.push({ pid: parent.pid, exe: parent.exe, comm: parent.comm || undefined });
      child = parent;
    }
    return out;
  }

  /** The most recently started live process of a container (named on file and network events). */
  latestIn(containerId: string): ProcessEntry | undefined {
    const cached = this.latest.get(containerId);
    if (cached && !cached.exited && cached.containerId === containerId && this.byPid.get(cached.pid) === cached) return cached;
    let best: ProcessEntry | undefined;
    for (const e of this.byPid.values()) if (e.containerId === containerId && !e.exited && (!best || e.since > best.since)) best = e;
    if (best) this.latest.set(containerId, best);
    else this.latest.delete(containerId);
    return best;
  }

  private noteStarted(e: ProcessEntry): void {
    if (!e.containerId || e.exited) return;
    const cur = this.latest.get(e.containerId);
    if (!cur || cur.exited || e.since >= cur.since) this.latest.set(e.containerId, e);
  }

  private prune(now: number): void {
    while (this.exitedOrder.length && now - this.exitedOrder[0].exited! >= this.keepExitedMs) this.forget(this.exitedOrder.shift()!);
  }

  private forget(e: ProcessEntry): void {
    if (this.byPid.get(e.pid) === e) this.byPid.delete(e.pid);
    if (this.latest.get(e.containerId) === e) this.latest.delete(e.containerId);
  }

  private bound(): void {
    if (this.byPid.size <= this.maxEntries) return;
    while (this.byPid.size > this.maxEntries && this.exitedOrder.length) this.forget(this.exitedOrder.shift()!);
    for (const e of this.byPid.values()) {
      if (this.byPid.size <= this.maxEntries) break;
      this.forget(e);
    }
  }
}
