import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ContainerInfo, ProcessExecEvent } from '../../events/types.js';
import { RunwatchError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { DockerClientRuns } from '../../pipeline/docker-client-runs.js';
import { isInUpperLayer } from '../file/upper-layer.js';
import type { Sensor, SensorContext, SensorHealth } from '../sensor.js';
import { loadProcConnector, ProcConnector, type ConnectorEvent, type ConnectorExecEvent, type ConnectorStats } from './proc-connector.js';
import { listPids, readProcess, ttyName } from './procfs.js';
import { ProcessTable } from './process-table.js';

export interface ProcessSensorOptions {
  source: 'auto' | 'connector' | 'procfs';
  ancestors: number;
  realtime: boolean;
  procfsIntervalMs: number;
  trackDockerCli: boolean;
  /** Where host-side `docker` CLI runs go, for naming the host user behind admin actions. */
  dockerClients?: DockerClientRuns;
  /** How often losses are checked and reported as a `sensor.events_lost` audit record. */
  lossReportMs?: number;
}

const UNRESOLVED_WARN_RATIO = 0.05;

/**
 * Every exec in every container, from the kernel's process connector (a native addon reads the netlink
 * socket and /proc/<pid> on its own thread, so short-lived processes are read before they exit). Keeps a
 * process table for attribution and ancestry; checks drift against the container's upper layer; records
 * host `docker` CLI runs. Without the connector it falls back to scanning /proc, and says loudly that
 * coverage is partial. Every loss is counted and reported as an audit record.
 */
export class ProcessSensor implements Sensor {
  readonly name = 'process' as const;
  private ctx!: SensorContext;
  private log!: Logger;
  private readonly table = new ProcessTable();
  private connector: ProcConnector | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private lossTimer: NodeJS.Timeout | undefined;
  private mode: 'connector' | 'procfs' | 'off' = 'off';
  private fallbackReason = '';
  private readonly procfsSeen = new Map<number, number>();
  private readonly passwd = new Map<string, Map<number, string>>();
  private readonly counts = { emitted: 0, dropped: 0, execs: 0, containerExecs: 0, unresolved: 0, dockerCliRuns: 0, lostReported: 0 };
  private lastLoss = { at: Date.now(), kernelLost: 0, queueDrops: 0, dropped: 0 };
  private state: SensorHealth['state'] = 'stopped';

  constructor(private readonly opts: ProcessSensorOptions) {}

  async start(ctx: SensorContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log.child({ sensor: 'process' });
    this.state = 'starting';
    this.scanExisting();
    if (this.opts.source !== 'procfs') this.startConnector();
    if (this.mode !== 'connector') this.startProcfs();
    ctx.processLookup = (containerId) => {
      const e = this.table.latestIn(containerId);
      return e ? { pid: e.pid, exe: e.exe, args: e.args } : undefined;
    };
    this.lossTimer = setInterval(() => this.reportLoss(), this.opts.lossReportMs ?? 5000);
    this.lossTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.scanTimer);
    clearInterval(this.lossTimer);
    this.connector?.stop();
    if (this.mode !== 'off') this.reportLoss();
    this.connector = undefined;
    this.mode = 'off';
    this.state = 'stopped';
  }

  health(): SensorHealth {
    const s = this.connector?.stats();
    const ratio = this.counts.execs ? this.counts.unresolved / this.counts.execs : 0;
    const details: Record<string, string | number | boolean> = {
      source: this.mode,
      coverage: this.mode === 'connector' ? 'full' : 'partial',
      execs: this.counts.execs,
      containerExecs: this.counts.containerExecs,
      unresolved: this.counts.unresolved,
      unresolvedPercent: Math.round(ratio * 1000) / 10,
      dockerCliRuns: this.counts.dockerCliRuns,
      processTable: this.table.size,
    };
    if (s) Object.assign(details, { kernelLost: s.kernelLost, queueDrops: s.queueDrops, enobufs: s.enobufs, rcvbufBytes: s.rcvbufBytes, schedFifo: s.schedFifo });
    if (ratio > UNRESOLVED_WARN_RATIO && this.counts.execs >= 100) details.warning = `${details.unresolvedPercent}% of execs exited before their executable could be read`;
    const lastError = this.mode === 'procfs' ? `process connector unavailable (${this.fallbackReason}): /proc scanning sees only processes alive at a scan` : undefined;
    return { state: this.state, lastError, emitted: this.counts.emitted, dropped: this.counts.dropped + (s ? s.kernelLost + s.queueDrops : 0), details };
  }

  private startConnector(): void {
    const avail = loadProcConnector();
    try {
      if (!avail.available) throw Object.assign(new Error(avail.reason), { code: 'EUNAVAILABLE' });
      const connector = new ProcConnector({ realtime: this.opts.realtime }, (batch) => this.onBatch(batch));
      connector.start();
      this.connector = connector;
      this.mode = 'connector';
      this.state = 'running';
      const s = connector.stats();
      if (this.opts.realtime && !s.schedFifo) this.log.warn('reader thread could not get SCHED_FIFO (CAP_SYS_NICE?): very short-lived processes may exit before they are read');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      this.fallbackReason = `${code}: ${(err as Error).message}`;
      if (this.opts.source === 'connector') {
        throw new RunwatchError('RW_SENSOR', `the process connector cannot be used (${this.fallbackReason}); runwatch needs CAP_NET_ADMIN and the host network and pid namespaces, or sensors.process.source: procfs`, { field: 'sensors.process.source' }, { cause: err });
      }
    }
  }

  private startProcfs(): void {
    this.mode = 'procfs';
    this.state = 'degraded';
    this.log.error('PARTIAL EXEC COVERAGE: the kernel process connector is not in use; falling back to /proc scanning, which misses short-lived processes', {
      reason: this.fallbackReason || 'sensors.process.source: procfs',
      intervalMs: this.opts.procfsIntervalMs,
    });
    this.scanTimer = setInterval(() => this.scanProcfs(), this.opts.procfsIntervalMs);
    this.scanTimer.unref();
  }

  /** Processes that already run: the table needs them for attribution and ancestry. */
  private scanExisting(): void {
    const now = Date.now();
    for (const pid of listPids()) {
      const p = readProcess(pid);
      if (!p) continue;
      this.table.set({ pid, ppid: p.ppid, containerId: p.containerId, exe: p.exe, args: p.args, comm: p.comm, uid: p.uid, since: now });
      this.procfsSeen.set(pid, p.startTicks);
    }
  }

  private scanProcfs(): void {
    const now = Date.now();
    const alive = new Set<number>();
    for (const pid of listPids()) {
      alive.add(pid);
      const p = readProcess(pid);
      if (!p || this.procfsSeen.get(pid) === p.startTicks) continue;
      this.procfsSeen.set(pid, p.startTicks);
      this.handleExec({ type: 'exec', ts: now, pid, ppid: p.ppid, uid: p.uid, euid: p.uid, exe: p.exe, exeDeleted: p.exeDeleted, args: p.args, argsTruncated: false, comm: p.comm, tty: 0, stdioSocket: false, containerId: p.containerId, resolved: true });
    }
    for (const pid of this.procfsSeen.keys()) if (!alive.has(pid)) this.procfsSeen.delete(pid);
  }

  private onBatch(batch: ConnectorEvent[]): void {
    for (const e of batch) {
      switch (e.type) {
        case 'fork':
          this.table.fork(e.parentPid, e.childPid, e.ts);
          break;
        case 'exec':
          this.handleExec(e);
          break;
        case 'exit':
          this.table.exit(e.pid, e.ts);
          break;
      }
    }
  }

  private handleExec(e: ConnectorExecEvent): void {
    this.counts.execs++;
    if (!e.resolved) this.counts.unresolved++;
    const entry = this.table.exec(e.pid, e.ts, { ppid: e.ppid, containerId: e.containerId, exe: e.exe, args: e.args, comm: e.comm, uid: e.resolved ? e.uid : undefined });
    const containerId = entry.containerId;
    if (!containerId) {
      if (this.opts.trackDockerCli && e.resolved && isDockerCli(e)) this.recordDockerCli(e);
      return;
    }
    this.counts.containerExecs++;
    const info = this.ctx.inventory.get(containerId);
    // An unresolved exec keeps what fork inherited in the table, but the record must not pass the parent's program off as this one.
    const ev: ProcessExecEvent = {
      kind: 'process_exec',
      ts: e.ts,
      containerId,
      pid: e.pid,
      ppid: entry.ppid,
      exe: e.resolved ? e.exe : '',
      args: e.resolved ? e.args : [],
      uid: e.resolved ? e.uid : entry.uid,
      ancestors: this.table.ancestors(e.pid, this.opts.ancestors),
      resolved: e.resolved,
    };
    if (e.resolved) {
      if (e.args.length) ev.argv0 = e.args[0];
      if (e.comm) ev.comm = e.comm;
      if (e.cwd) ev.cwd = e.cwd;
      const tty = ttyName(e.tty);
      if (tty) ev.tty = tty;
      if (e.exeDeleted) ev.exeDeleted = true;
      if (e.stdioSocket) ev.stdioSocket = true;
      if (info && e.exe && !e.exeDeleted) ev.inUpperLayer = isInUpperLayer(info, e.exe);
      const user = info ? this.userName(info, e.uid) : undefined;
      if (user) ev.user = user;
    }
    if (this.ctx.queue.push(ev)) this.counts.emitted++;
    else this.counts.dropped++;
  }

  private recordDockerCli(e: ConnectorExecEvent): void {
    this.counts.dockerCliRuns++;
    const run: Parameters<DockerClientRuns['add']>[0] = { ts: e.ts, pid: e.pid, uid: e.uid, args: e.args };
    if (e.loginuid !== undefined && e.loginuid !== 4294967295) run.loginuid = e.loginuid;
    const tty = ttyName(e.tty);
    if (tty) run.tty = tty;
    const user = this.hostUserName(run.loginuid ?? e.uid);
    if (user) run.user = user;
    this.opts.dockerClients?.add(run);
  }

  /** The user name for a uid from the container's own /etc/passwd (read once per container). */
  private userName(info: ContainerInfo, uid: number): string | undefined {
    if (!info.mergedDir) return undefined;
    let names = this.passwd.get(info.id);
    if (!names) {
      names = parsePasswd(safeRead(path.join(info.mergedDir, 'etc/passwd')));
      if (this.passwd.size > 1000) this.passwd.clear();
      this.passwd.set(info.id, names);
    }
    return names.get(uid);
  }

  private hostUserName(uid: number): string | undefined {
    let names = this.passwd.get('');
    if (!names) this.passwd.set('', (names = parsePasswd(safeRead('/etc/passwd'))));
    return names.get(uid);
  }

  /** Losses since the last report become one `sensor.events_lost` audit record with the count and window. */
  private reportLoss(): void {
    const s: Partial<ConnectorStats> = this.connector?.stats() ?? {};
    const now = Date.now();
    const kernelLost = s.kernelLost ?? 0;
    const queueDrops = s.queueDrops ?? 0;
    const dropped = this.counts.dropped;
    const lost = kernelLost - this.lastLoss.kernelLost + (queueDrops - this.lastLoss.queueDrops) + (dropped - this.lastLoss.dropped);
    if (lost > 0) {
      const from = new Date(this.lastLoss.at).toISOString();
      const to = new Date(now).toISOString();
      this.counts.lostReported += lost;
      this.log.warn('process events lost', { lost, from, to });
      // The notice goes around the sensor's own counters: it is about them.
      this.ctx.queue.push({
        kind: 'agent_notice',
        ts: now,
        rule: 'sensor.events_lost',
        severity: 'high',
        message: `Process sensor lost ${lost} events between ${from} and ${to}: execs in that window may be missing`,
        details: { sensor: 'process', lost, kernelLost: kernelLost - this.lastLoss.kernelLost, nativeQueueDrops: queueDrops - this.lastLoss.queueDrops, pipelineQueueDrops: dropped - this.lastLoss.dropped, from, to },
      });
    }
    this.lastLoss = { at: now, kernelLost, queueDrops, dropped };
  }
}

function isDockerCli(e: ConnectorExecEvent): boolean {
  const name = path.basename(e.exe);
  return name === 'docker' || name === 'docker.io' || (e.args.length > 0 && path.basename(e.args[0]) === 'docker');
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function parsePasswd(text: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^\d+$/.test(f[2]) && !out.has(Number(f[2]))) out.set(Number(f[2]), f[0]);
  }
  return out;
}
