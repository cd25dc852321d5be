import { readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { ContainerInfo, NetSocketEvent, ProcessSummary } from '../../events/types.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Sensor, SensorContext, SensorHealth } from '../sensor.js';
import { NetnsReader, type TableKind } from './netns-reader.js';
import { decodeEndpoint, parsePortRange, socketKey, stateName, tcpFingerprint, udpFingerprint, type NetCounters } from './proc-net-table.js';
import { classifyTable, newTableMemory, type SocketCandidate, type TableMemory } from './socket-classifier.js';
import { SocketOwnerFinder } from './socket-owners.js';

export interface NetworkSensorOptions {
  intervalSeconds: number;
  /** Each namespace's tables are read in full at least this often, even when its counters did not move. */
  fullScanSeconds?: number;
  /** Read a namespace's tables only when its counters moved (default). Off reads every table every cycle. */
  gateOnCounters?: boolean;
  procRoot?: string;
  cgroupRoot?: string;
  /** Bound on /proc/<pid>/fd links read per namespace per cycle to find socket owners. */
  maxFdReadsPerCycle?: number;
  /** How long a socket whose holder is not found yet waits for it (a container joining the namespace may not be in the inventory yet). */
  ownerWaitSeconds?: number;
}

/** The containers of one network namespace and what the sensor remembers about its tables. */
interface NetnsGroup {
  inode: string;
  reader: NetnsReader;
  members: ContainerInfo[];
  /** The host's namespace: its sockets belong to a container only when one of its processes holds them. */
  shared: boolean;
  memory: Record<TableKind, TableMemory>;
  fingerprints: Partial<Record<TableKind, string>>;
  activeOpens?: number;
  nextFullScanAt: number;
  /** New sockets (by inode) whose holder was not found yet, and since when. */
  pending: Map<number, { candidate: SocketCandidate; since: number }>;
}

/** A container joining the host's namespace: the sockets to look at again, and which were known before. */
interface Rescan {
  joined: Set<string>;
  previousKeys: Set<string>;
}

/** How often each namespace's tables are read even when its counters did not move (see docs/sensors-network.md). */
export const DEFAULT_FULL_SCAN_SECONDS = 600;
const GOLDEN_RATIO = 0.6180339887;
const DEFAULT_OWNER_WAIT_SECONDS = 2;
const MAX_PENDING = 10_000;
/** Every new network namespace starts with ip_local_port_range 32768-60999. */
const KERNEL_EPHEMERAL_LOW = 32768;

/**
 * Polls the socket tables of every container's network namespace and reports new listening sockets and
 * new outbound connections as `net_socket` events. Containers sharing a namespace are read once; the
 * host's namespace (host-network containers) is attributed socket by socket through process fds.
 * What a poll cannot see (connections shorter than the interval) is in docs/sensors-network.md.
 */
export class NetworkSensor implements Sensor {
  readonly name = 'network' as const;
  private ctx!: SensorContext;
  private log!: Logger;
  private readonly procRoot: string;
  private readonly owners: SocketOwnerFinder;
  private readonly groups = new Map<string, NetnsGroup>();
  /** Container id + init pid → netns inode. */
  private netnsCache = new Map<string, string>();
  private readonly buffer = Buffer.allocUnsafe(1 << 16);
  private selfNetns = '';
  /**
   * Lower end of ip_local_port_range. /proc/sys shows the reader's own namespace, so only the host's value
   * can be read; every other namespace starts with the kernel default (a --sysctl override is not seen).
   */
  private hostEphemeralLow = KERNEL_EPHEMERAL_LOW;
  /** Namespaces opened so far (spreads their full scans). */
  private opened = 0;
  private timer: NodeJS.Timeout | undefined;
  private cycle: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;
  private stopped = true;
  private state: SensorHealth['state'] = 'stopped';
  private lastError: string | undefined;
  private readonly stats = {
    emitted: 0,
    dropped: 0,
    cycles: 0,
    tableReads: 0,
    tableReadsSkipped: 0,
    fullScans: 0,
    errors: 0,
    containersGone: 0,
    inbound: 0,
    udpClients: 0,
    ownerNotFound: 0,
    hostSocketsSkipped: 0,
    connectAttemptsUnseen: 0,
    lastCycleMs: 0,
  };

  constructor(private readonly opts: NetworkSensorOptions) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.owners = new SocketOwnerFinder({
      procRoot: this.procRoot,
      cgroupRoot: opts.cgroupRoot ?? '/sys/fs/cgroup',
      maxFdReads: opts.maxFdReadsPerCycle ?? 20_000,
    });
  }

  async start(ctx: SensorContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log.child({ sensor: 'network' });
    this.stopped = false;
    this.state = 'starting';
    this.selfNetns = readNetns(this.procRoot, 'self') ?? '';
    try {
      this.hostEphemeralLow = parsePortRange(readFileSync(path.join(this.procRoot, 'sys/net/ipv4/ip_local_port_range'), 'latin1'))[0];
    } catch {
      // No /proc/sys (unusual container setups): the kernel default holds.
    }
    this.unsubscribe = ctx.inventory.subscribe((change) => {
      if (change.type !== 'added') this.owners.forget(change.info.id);
    });
    ctx.signal.addEventListener('abort', () => void this.stop(), { once: true });
    await this.poll();
    this.state = 'running';
    this.schedule();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    this.unsubscribe?.();
    await this.cycle?.catch(() => undefined);
    for (const g of this.groups.values()) {
      this.flushPending(g);
      g.reader.close();
    }
    this.groups.clear();
    this.state = 'stopped';
  }

  health(): SensorHealth {
    const { emitted, dropped, ...details } = this.stats;
    const { fdReads, truncated, cgroupMissing, processGone } = this.owners.stats;
    return {
      state: this.state,
      lastError: this.lastError,
      emitted,
      dropped,
      details: {
        source: 'procfs',
        namespaces: this.groups.size,
        ...details,
        fdReads,
        fdScanTruncated: truncated,
        cgroupMissing,
        ownerProcessGone: processGone,
      },
    };
  }

  /** One poll of every namespace now (the timer's work; benchmarks call it directly). Joins a poll already running. */
  poll(): Promise<void> {
    this.cycle ??= this.pollAll().finally(() => {
      this.cycle = undefined;
    });
    return this.cycle;
  }

  private async pollAll(): Promise<void> {
    const started = performance.now();
    const now = Date.now();
    const errorsBefore = this.stats.errors;
    this.stats.cycles++;
    const byNetns = new Map<string, ContainerInfo[]>();
    const cache = new Map<string, string>();
    for (const info of this.ctx.inventory.list()) {
      if (!info.running || info.pid <= 0) continue;
      const key = `${info.id}:${info.pid}`;
      const inode = this.netnsCache.get(key) ?? readNetns(this.procRoot, String(info.pid));
      if (!inode) {
        this.stats.containersGone++;
        continue;
      }
      cache.set(key, inode);
      const members = byNetns.get(inode);
      if (members) members.push(info);
      else byNetns.set(inode, [info]);
    }
    this.netnsCache = cache;
    for (const [inode, g] of this.groups) {
      if (byNetns.has(inode)) continue;
      this.flushPending(g);
      g.reader.close();
      this.groups.delete(inode);
    }
    for (const [inode, members] of byNetns) {
      if (this.stopped) break;
      try {
        const readTables = this.pollNamespace(inode, members, now);
        // A table read can take milliseconds: let the pipeline and other sensors run in between.
        if (readTables) await new Promise<void>((r) => setImmediate(r));
      } catch (err) {
        this.countError(err, inode);
      }
    }
    this.stats.lastCycleMs = Math.round((performance.now() - started) * 1000) / 1000;
    if (this.state !== 'starting' && !this.stopped) this.state = this.stats.errors > errorsBefore ? 'degraded' : 'running';
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.poll()
        .catch((err) => this.countError(err, 'cycle'))
        .finally(() => this.schedule());
    }, this.opts.intervalSeconds * 1000);
    this.timer.unref();
  }

  /** Returns whether a socket table was read. */
  private pollNamespace(inode: string, members: ContainerInfo[], now: number): boolean {
    let group = this.groups.get(inode);
    const joined = group ? members.filter((m) => !group!.members.some((old) => old.id === m.id)) : [];
    if (!group) {
      group = this.openNamespace(inode, members, now);
      if (!group) return false;
      this.groups.set(inode, group);
    }
    group.members = members;
    group.shared = inode === this.selfNetns || members.some((m) => m.hostNamespaces.net);
    const counters = group.reader.readCounters();
    const fullScan = now >= group.nextFullScanAt;
    if (fullScan) {
      group.nextFullScanAt = now + this.fullScanMs();
      this.stats.fullScans++;
    }
    // A container joining the host's namespace may hold sockets the table already had: look at them all again.
    const rescan: Rescan | undefined = group.shared && joined.length ? { joined: new Set(joined.map((j) => j.id)), previousKeys: new Set() } : undefined;
    const fresh: SocketCandidate[] = [];
    let read = false;
    for (const kind of ['tcp', 'udp'] as const) {
      const fingerprint = kind === 'tcp' ? tcpFingerprint(counters) : udpFingerprint(counters);
      const due = this.opts.gateOnCounters === false || fullScan || rescan || group.fingerprints[kind] !== fingerprint;
      if (!due) {
        this.stats.tableReadsSkipped++;
        continue;
      }
      fresh.push(...this.readTable(group, kind, counters, rescan));
      group.fingerprints[kind] = fingerprint;
      read = true;
    }
    if (fresh.length || group.pending.size) this.attribute(group, fresh, rescan, now);
    return read;
  }

  private openNamespace(inode: string, members: ContainerInfo[], now: number): NetnsGroup | undefined {
    for (const m of members) {
      let reader: NetnsReader;
      try {
        reader = new NetnsReader(this.procRoot, m.pid, this.buffer);
      } catch (err) {
        if (!isGone(err)) this.countError(err, inode);
        continue;
      }
      // The pid could have been reused between reading its namespace and opening its files.
      if (readNetns(this.procRoot, String(m.pid)) !== inode) {
        reader.close();
        continue;
      }
      // Spread the periodic full reads of namespaces that appeared together evenly over the period.
      const spread = (++this.opened * GOLDEN_RATIO) % 1;
      return {
        inode,
        reader,
        members,
        shared: false,
        memory: { tcp: newTableMemory(), udp: newTableMemory() },
        fingerprints: {},
        nextFullScanAt: now + this.fullScanMs() * spread,
        pending: new Map(),
      };
    }
    this.stats.containersGone++;
    return undefined;
  }

  /** The new listeners and outbound connections of one table kind. */
  private readTable(group: NetnsGroup, kind: TableKind, counters: NetCounters, rescan: Rescan | undefined): SocketCandidate[] {
    const memory = group.memory[kind];
    if (rescan) {
      for (const k of memory.keys) rescan.previousKeys.add(k);
      memory.keys = new Set();
    }
    const sockets = group.reader.readTables(kind);
    this.stats.tableReads++;
    const result = classifyTable(sockets, memory, { ephemeralLow: group.shared ? this.hostEphemeralLow : KERNEL_EPHEMERAL_LOW });
    this.stats.inbound += result.inbound;
    this.stats.udpClients += result.udpClients;
    if (kind === 'tcp' && !group.shared) {
      // Every outbound TCP connection counts one active open; those the table no longer held were too short to see.
      const seen = result.candidates.filter((c) => c.direction === 'connect').length;
      if (group.activeOpens !== undefined) this.stats.connectAttemptsUnseen += Math.max(0, counters.activeOpens - group.activeOpens - seen);
      group.activeOpens = counters.activeOpens;
    }
    return result.candidates;
  }

  /**
   * Finds who holds each new socket and queues its event. In the host's namespace a socket no member holds
   * is not a container's. Elsewhere a socket whose holder is not found waits up to ownerWaitSeconds (the
   * container that joined the namespace may not be in the inventory yet), then goes to the namespace's own
   * container without a process.
   */
  private attribute(group: NetnsGroup, fresh: SocketCandidate[], rescan: Rescan | undefined, now: number): void {
    const inodes = new Set<number>(group.pending.keys());
    for (const c of fresh) if (c.socket.inode > 0) inodes.add(c.socket.inode);
    const owners = inodes.size ? this.owners.find(inodes, group.members) : undefined;
    const waitMs = (this.opts.ownerWaitSeconds ?? DEFAULT_OWNER_WAIT_SECONDS) * 1000;
    for (const [inode, p] of group.pending) {
      const owner = owners?.get(inode);
      if (!owner && now - p.since < waitMs) continue;
      if (!owner) this.stats.ownerNotFound++;
      this.push(p.candidate, owner?.containerId ?? primaryOf(group).id, owner?.process, p.since);
      group.pending.delete(inode);
    }
    for (const c of fresh) {
      const owner = owners?.get(c.socket.inode);
      if (group.shared) {
        if (!owner) this.stats.hostSocketsSkipped++;
        else if (!rescan || rescan.joined.has(owner.containerId) || !rescan.previousKeys.has(socketKey(c.socket)))
          this.push(c, owner.containerId, owner.process, now);
      } else if (owner) {
        this.push(c, owner.containerId, owner.process, now);
      } else if (c.socket.inode > 0 && group.pending.size < MAX_PENDING && waitMs > 0) {
        group.pending.set(c.socket.inode, { candidate: c, since: now });
      } else {
        if (c.socket.inode > 0) this.stats.ownerNotFound++;
        this.push(c, primaryOf(group).id, undefined, now);
      }
    }
  }

  /** The namespace goes away (or the sensor stops): sockets still waiting for a holder are reported without one. */
  private flushPending(group: NetnsGroup): void {
    for (const p of group.pending.values()) {
      this.stats.ownerNotFound++;
      this.push(p.candidate, primaryOf(group).id, undefined, p.since);
    }
    group.pending.clear();
  }

  private push({ socket, direction }: SocketCandidate, containerId: string, holder: ProcessSummary | undefined, ts: number): void {
    const ev: NetSocketEvent = {
      kind: 'net_socket',
      ts,
      containerId,
      protocol: socket.protocol,
      direction,
      local: decodeEndpoint(socket.localHex, socket.protocol),
      state: stateName(socket.protocol, socket.state),
    };
    if (direction === 'connect') ev.remote = decodeEndpoint(socket.remoteHex, socket.protocol);
    if (holder) ev.process = holder;
    if (this.ctx.queue.push(ev)) this.stats.emitted++;
    else this.stats.dropped++;
  }

  private fullScanMs(): number {
    return (this.opts.fullScanSeconds ?? DEFAULT_FULL_SCAN_SECONDS) * 1000;
  }

  private countError(err: unknown, where: string): void {
    if (isGone(err)) {
      this.stats.containersGone++;
      return;
    }
    this.stats.errors++;
    this.lastError = errorMessage(err);
    if (this.stats.errors <= 5 || this.stats.errors % 100 === 0)
      this.log.warn('network poll failed', { netns: where, error: this.lastError, errors: this.stats.errors });
  }
}

/** The container the namespace was made for (not one that joined it with --network container:…). */
function primaryOf(group: NetnsGroup): ContainerInfo {
  return group.members.find((m) => !m.networkMode.startsWith('container:')) ?? group.members[0];
}

/** "net:[4026532181]" of /proc/<pid>/ns/net, or undefined when the process is gone. */
function readNetns(procRoot: string, pid: string): string | undefined {
  try {
    return readlinkSync(path.join(procRoot, pid, 'ns', 'net'));
  } catch {
    return undefined;
  }
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ESRCH';
}
