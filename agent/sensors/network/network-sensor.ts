import { readlinkSync } from 'node:fs';
import path from 'node:path';
import type { ContainerInfo, NetSocketEvent } from '../../events/types.js';
import { errorMessage } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Sensor, SensorContext, SensorHealth } from '../sensor.js';
import { NetnsReader, type TableKind } from './netns-reader.js';
import { decodeEndpoint, socketKey, stateName, tcpFingerprint, udpFingerprint, type NetCounters } from './proc-net-table.js';
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
}

const DEFAULT_FULL_SCAN_SECONDS = 300;

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
    lastCycleCpuMs: 0,
  };

  constructor(private readonly opts: NetworkSensorOptions) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.owners = new SocketOwnerFinder({ procRoot: this.procRoot, cgroupRoot: opts.cgroupRoot ?? '/sys/fs/cgroup', maxFdReads: opts.maxFdReadsPerCycle ?? 20_000 });
  }

  async start(ctx: SensorContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log.child({ sensor: 'network' });
    this.stopped = false;
    this.state = 'starting';
    this.selfNetns = readNetns(this.procRoot, 'self') ?? '';
    this.unsubscribe = ctx.inventory.subscribe((change) => {
      if (change.type !== 'added') this.owners.forget(change.info.id);
    });
    ctx.signal.addEventListener('abort', () => void this.stop(), { once: true });
    this.cycle = this.poll();
    await this.cycle;
    this.state = 'running';
    this.schedule();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    this.unsubscribe?.();
    await this.cycle;
    for (const g of this.groups.values()) g.reader.close();
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
      details: { source: 'procfs', namespaces: this.groups.size, ...details, fdReads, fdScanTruncated: truncated, cgroupMissing, ownerProcessGone: processGone },
    };
  }

  /** One poll of every namespace now (the timer's work; benchmarks call it directly). */
  async poll(): Promise<void> {
    const cpu0 = process.cpuUsage();
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
    const cpu = process.cpuUsage(cpu0);
    this.stats.lastCycleCpuMs = (cpu.user + cpu.system) / 1000;
    if (this.state !== 'starting' && !this.stopped) this.state = this.stats.errors > errorsBefore ? 'degraded' : 'running';
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.cycle = this.poll()
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
    const rescanFor = group.shared && joined.length ? new Set(joined.map((j) => j.id)) : undefined;
    let read = false;
    for (const kind of ['tcp', 'udp'] as const) {
      const fingerprint = kind === 'tcp' ? tcpFingerprint(counters) : udpFingerprint(counters);
      const due = this.opts.gateOnCounters === false || fullScan || rescanFor || group.fingerprints[kind] !== fingerprint;
      if (!due) {
        this.stats.tableReadsSkipped++;
        continue;
      }
      this.readTable(group, kind, counters, rescanFor, now);
      group.fingerprints[kind] = fingerprint;
      read = true;
    }
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
      // Spread the periodic full reads of namespaces that appeared together over the whole period.
      const spread = (Number(/\d+/.exec(inode)?.[0] ?? 0) % 997) / 997;
      return { inode, reader, members, shared: false, memory: { tcp: newTableMemory(), udp: newTableMemory() }, fingerprints: {}, nextFullScanAt: now + this.fullScanMs() * spread };
    }
    this.stats.containersGone++;
    return undefined;
  }

  private readTable(group: NetnsGroup, kind: TableKind, counters: NetCounters, rescanFor: Set<string> | undefined, now: number): void {
    const memory = group.memory[kind];
    const previousKeys = memory.keys;
    if (rescanFor) memory.keys = new Set();
    const sockets = group.reader.readTables(kind);
    this.stats.tableReads++;
    const result = classifyTable(sockets, memory, { ephemeralLow: group.reader.ephemeralRange[0] });
    this.stats.inbound += result.inbound;
    this.stats.udpClients += result.udpClients;
    if (kind === 'tcp' && !group.shared) {
      // Every outbound TCP connection counts one active open; those the table no longer held were too short to see.
      const seen = result.candidates.filter((c) => c.direction === 'connect').length;
      if (group.activeOpens !== undefined) this.stats.connectAttemptsUnseen += Math.max(0, counters.activeOpens - group.activeOpens - seen);
      group.activeOpens = counters.activeOpens;
    }
    if (result.candidates.length) this.emit(group, result.candidates, rescanFor ? { rescanFor, previousKeys } : undefined, now);
  }

  private emit(group: NetnsGroup, candidates: SocketCandidate[], rescan: { rescanFor: Set<string>; previousKeys: Set<string> } | undefined, now: number): void {
    const inodes = new Set<number>();
    for (const c of candidates) if (c.socket.inode > 0) inodes.add(c.socket.inode);
    const owners = inodes.size ? this.owners.find(inodes, group.members) : undefined;
    const primary = group.members.find((m) => !m.networkMode.startsWith('container:')) ?? group.members[0];
    for (const { socket, direction } of candidates) {
      const owner = owners?.get(socket.inode);
      if (!owner && group.shared) {
        this.stats.hostSocketsSkipped++;
        continue;
      }
      if (rescan && owner && !rescan.rescanFor.has(owner.containerId) && rescan.previousKeys.has(socketKey(socket))) continue;
      if (!owner && socket.inode > 0) this.stats.ownerNotFound++;
      const ev: NetSocketEvent = {
        kind: 'net_socket',
        ts: now,
        containerId: owner?.containerId ?? primary.id,
        protocol: socket.protocol,
        direction,
        local: decodeEndpoint(socket.localHex, socket.protocol),
        state: stateName(socket.protocol, socket.state),
      };
      if (direction === 'connect') ev.remote = decodeEndpoint(socket.remoteHex, socket.protocol);
      if (owner) ev.process = owner.process;
      if (this.ctx.queue.push(ev)) this.stats.emitted++;
      else this.stats.dropped++;
    }
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
    if (this.stats.errors <= 5 || this.stats.errors % 100 === 0) this.log.warn('network poll failed', { netns: where, error: this.lastError, errors: this.stats.errors });
  }
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
