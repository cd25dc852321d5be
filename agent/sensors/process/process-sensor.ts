import { readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { assertNever, type ContainerInfo, type ProcessExecEvent } from '../../events/types.js';
import { RunwatchError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { DockerClientRuns } from '../../pipeline/docker-client-runs.js';
import { isInUpperLayer } from '../file/upper-layer.js';
import type { Sensor, SensorContext, SensorHealth } from '../sensor.js';
import { loadProcConnector, ProcConnector, type ConnectorEvent, type ConnectorExecEvent, type ConnectorStats } from './proc-connector.js';
import { listPids, parsePasswd, readFileBeneath, readProcess, readStat, ttyName, type ProcfsProcess } from './procfs.js';
import { ProcessTable } from './process-table.js';

export interface ProcessSensorOptions {
  source: 'auto' | 'connector' | 'procfs';
  ancestors: number;
  realtime: boolean;
  perCpuReaders: boolean;
  procfsIntervalMs: number;
  trackDockerCli: boolean;
  /** Where host-side `docker` CLI runs go, for naming the host user behind admin actions. */
  dockerClients?: DockerClientRuns;
  /** How often losses are checked and reported as a `sensor.events_lost` audit record; also the window of the unresolved-exec warning. */
  lossReportMs?: number;
}

/** Above this share of unresolved execs in a window (of at least UNRESOLVED_MIN_EXECS) health warns. */
const UNRESOLVED_WARN_RATIO = 0.05;
const UNRESOLVED_MIN_EXECS = 100;
const UNSET_LOGINUID = 4294967295;
/** A name-less uid makes /etc/passwd be read again, at most this often (a user added after the first read). */
const PASSWD_REREAD_MS = 30_000;
const PASSWD_CACHE_MAX = 1000;
/** USER_HZ, the unit of /proc/<pid>/stat start times: 100 on every architecture Docker runs on. */
const CLK_TCK = 100;

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
  /** procfs mode: pid → what identified the process at the last scan (start time, executable, name). */
  private readonly procfsSeen = new Map<number, string>();
  private readonly passwd = new Map<string, { names: Map<number, string>; readAt: number }>();
  private readonly counts = { emitted: 0, dropped: 0, execs: 0, containerExecs: 0, unresolved: 0, dockerCliRuns: 0, lostReported: 0, noticesDropped: 0 };
  private window = { execs: 0, unresolved: 0 };
  private lastWindow = { execs: 0, unresolved: 0 };
  private lastUnresolvedWarnAt = 0;
  /** Loss counters as of the last report; kernelLost only ever rises here (late arrivals lower the native count). */
  private reported = { at: Date.now(), kernelLost: 0, queueDrops: 0, dropped: 0 };
  private state: SensorHealth['state'] = 'stopped';

  constructor(private readonly opts: ProcessSensorOptions) {}

  async start(ctx: SensorContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log.child({ sensor: 'process' });
    this.state = 'starting';
    // Before subscribing: every fork the connector reports is then newer than what the scan found (see ProcessTable.ancestors).
    this.scanExisting();
    if (this.opts.source !== 'procfs') this.startConnector();
    if (this.mode === 'connector') this.procfsSeen.clear();
    else this.startProcfs();
    ctx.processLookup = (containerId) => {
      const e = this.table.latestIn(containerId);
      return e ? { pid: e.pid, exe: e.exe, args: e.args } : undefined;
    };
    this.reported.at = Date.now();
    this.lossTimer = setInterval(() => this.onTick(), this.opts.lossReportMs ?? 5000);
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
    const pct = (w: { execs: number; unresolved: number }) => (w.execs ? Math.round((w.unresolved / w.execs) * 1000) / 10 : 0);
    const details: Record<string, string | number | boolean> = {
      source: this.mode,
      coverage: this.mode === 'connector' ? 'full' : this.mode === 'procfs' ? 'partial' : 'none',
      execs: this.counts.execs,
      containerExecs: this.counts.containerExecs,
      unresolved: this.counts.unresolved,
      unresolvedPercent: pct(this.counts),
      recentUnresolvedPercent: pct(this.lastWindow),
      dockerCliRuns: this.counts.dockerCliRuns,
      processTable: this.table.size,
      lostReported: this.counts.lostReported,
    };
    if (s)
      Object.assign(details, {
        kernelLost: s.kernelLost,
        queueDrops: s.queueDrops,
        enobufs: s.enobufs,
        rcvbufBytes: s.rcvbufBytes,
        schedFifo: s.schedFifo,
        perCpuReaders: s.perCpuReaders,
      });
    const warning = this.unresolvedWarning();
    if (warning) details.warning = warning;
    const lastError =
      this.mode === 'procfs' ? `process connector unavailable (${this.fallbackReason}): /proc scanning sees only processes alive at a scan` : undefined;
    return {
      state: this.state,
      lastError,
      emitted: this.counts.emitted,
      dropped: this.counts.dropped + this.counts.noticesDropped + (s ? s.kernelLost + s.queueDrops : 0),
      details,
    };
  }

  private startConnector(): void {
    const avail = loadProcConnector();
    try {
      if (!avail.available) throw Object.assign(new Error(avail.reason), { code: 'EUNAVAILABLE' });
      const connector = new ProcConnector({ realtime: this.opts.realtime, perCpuReaders: this.opts.perCpuReaders }, (batch) => this.onBatch(batch));
      connector.start();
      this.connector = connector;
      this.mode = 'connector';
      this.state = 'running';
      if (this.opts.realtime && !connector.stats().schedFifo)
        this.log.warn('reader thread could not get SCHED_FIFO (CAP_SYS_NICE?): very short-lived processes may exit before they are read');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      this.fallbackReason = `${code}: ${(err as Error).message}`;
      if (this.opts.source === 'connector') {
        throw new RunwatchError(
          'RW_SENSOR',
          `the process connector cannot be used (${this.fallbackReason}); runwatch needs CAP_NET_ADMIN and the host network and pid namespaces, or sensors.process.source: procfs`,
          { field: 'sensors.process.source' },
          { cause: err },
        );
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
    const bootMs = bootEpochMs();
    for (const pid of listPids()) {
      const p = readProcess(pid);
      if (!p) continue;
      this.table.set({
        pid,
        ppid: p.ppid,
        containerId: p.containerId,
        exe: p.exe,
        args: p.args,
        comm: p.comm,
        uid: p.uid,
        since: startEpochMs(p, bootMs),
        exited: undefined,
      });
      this.procfsSeen.set(pid, identity(p, p.exe));
    }
  }

  private scanProcfs(): void {
    const now = Date.now();
    const bootMs = bootEpochMs();
    const alive = new Set<number>();
    for (const pid of listPids()) {
      const stat = readStat(pid);
      if (!stat) continue;
      alive.add(pid);
      let exe: string;
      try {
        exe = readlinkSync(`/proc/${pid}/exe`);
      } catch {
        continue; // kernel thread, or gone
      }
      const id = identity(stat, exe);
      if (this.procfsSeen.get(pid) === id) continue;
      const p = readProcess(pid, stat);
      if (!p) continue;
      this.procfsSeen.set(pid, id);
      this.handleExec(
        {
          type: 'exec',
          ts: now,
          pid,
          ppid: p.ppid,
          uid: p.uid,
          exe: p.exe,
          exeDeleted: p.exeDeleted,
          args: p.args,
          argsTruncated: false,
          comm: p.comm,
          tty: p.tty,
          stdioSocket: false,
          containerId: p.containerId,
          resolved: true,
        },
        startEpochMs(p, bootMs),
      );
    }
    for (const pid of this.procfsSeen.keys()) {
      if (alive.has(pid)) continue;
      this.procfsSeen.delete(pid);
      this.table.exit(pid, now);
    }
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
        default:
          assertNever(e, 'connector event');
      }
    }
  }

  /** `startedAt` is when the process started, when known better than the exec's time (a scan's first sight). */
  private handleExec(e: ConnectorExecEvent, startedAt = e.ts): void {
    this.counts.execs++;
    this.window.execs++;
    if (!e.resolved) {
      this.counts.unresolved++;
      this.window.unresolved++;
    }
    // comm and tty come from /proc/<pid>/stat, which outlives the exec'd image until the zombie is reaped: the
    // native reader leaves comm empty when it could not read it for this process.
    const statKnown = e.comm !== '';
    const entry = this.table.exec(e.pid, startedAt, {
      ppid: e.ppid,
      containerId: e.containerId,
      exe: e.resolved ? e.exe : '',
      args: e.resolved ? e.args : [],
      comm: e.comm,
      uid: e.uid >= 0 ? e.uid : undefined,
    });
    const containerId = entry.containerId;
    if (!containerId) {
      if (this.opts.trackDockerCli && e.resolved && isDockerCli(e)) this.recordDockerCli(e);
      return;
    }
    this.counts.containerExecs++;
    const info = this.ctx.inventory.get(containerId);
    const resolved = e.resolved;
    // Every field is set, if only to undefined: one object shape for every exec keeps the pipeline's and the
    // rules' code optimised (a shape per combination of fields made V8 deoptimise and recompile them).
    // Unresolved: the record says what is known (pid, parent, container, ancestry, the kernel's task name) and never guesses the program.
    const ev: ProcessExecEvent = {
      kind: 'process_exec',
      ts: e.ts,
      containerId,
      container: undefined,
      pid: e.pid,
      ppid: entry.ppid,
      exe: resolved ? e.exe : '',
      args: resolved ? e.args : [],
      argv0: resolved && e.args.length ? e.args[0] : undefined,
      comm: e.comm || undefined,
      uid: entry.uid,
      user: info && entry.uid >= 0 ? this.containerUserName(info, entry.uid) : undefined,
      cwd: e.cwd || undefined,
      tty: statKnown ? ttyName(e.tty) : undefined,
      ancestors: this.table.ancestors(e.pid, this.opts.ancestors),
      resolved,
      inUpperLayer: info && resolved && e.exe && !e.exeDeleted ? isInUpperLayer(info, e.exe) : undefined,
      exeDeleted: e.exeDeleted || undefined,
      stdioSocket: e.stdioSocket || undefined,
    };
    if (this.ctx.queue.push(ev)) this.counts.emitted++;
    else this.counts.dropped++;
  }

  private recordDockerCli(e: ConnectorExecEvent): void {
    const run: Parameters<DockerClientRuns['add']>[0] = { ts: e.ts, pid: e.pid, uid: e.uid, args: e.args };
    if (e.loginuid !== undefined && e.loginuid !== UNSET_LOGINUID) run.loginuid = e.loginuid;
    const tty = ttyName(e.tty);
    if (tty) run.tty = tty;
    // The person who logged in, also through sudo (uid 0, loginuid theirs).
    const user = this.userName('', run.loginuid ?? e.uid, () => safeRead('/etc/passwd'));
    if (user) run.user = user;
    if (this.opts.dockerClients?.add(run)) this.counts.dockerCliRuns++;
  }

  /** The user name for a uid from the container's own /etc/passwd, read without following its symlinks. */
  private containerUserName(info: ContainerInfo, uid: number): string | undefined {
    const known = this.passwd.get(info.id)?.names.get(uid);
    if (known !== undefined) return known;
    const root = info.mergedDir;
    return root ? this.userName(info.id, uid, () => readFileBeneath(root, 'etc/passwd') ?? '') : undefined;
  }

  private userName(key: string, uid: number, read: () => string): string | undefined {
    const now = Date.now();
    let cached = this.passwd.get(key);
    if (!cached || (!cached.names.has(uid) && now - cached.readAt > PASSWD_REREAD_MS)) {
      if (!cached && this.passwd.size >= PASSWD_CACHE_MAX) this.passwd.clear();
      cached = { names: parsePasswd(read()), readAt: now };
      this.passwd.set(key, cached);
    }
    return cached.names.get(uid);
  }

  private onTick(): void {
    this.reportLoss();
    this.lastWindow = this.window;
    this.window = { execs: 0, unresolved: 0 };
    const warning = this.unresolvedWarning();
    if (warning && Date.now() - this.lastUnresolvedWarnAt >= 60_000) {
      this.lastUnresolvedWarnAt = Date.now();
      this.log.warn(warning, { execs: this.lastWindow.execs, unresolved: this.lastWindow.unresolved });
    }
  }

  private unresolvedWarning(): string | undefined {
    const w = this.lastWindow.execs >= UNRESOLVED_MIN_EXECS ? this.lastWindow : this.counts;
    if (w.execs < UNRESOLVED_MIN_EXECS || w.unresolved / w.execs <= UNRESOLVED_WARN_RATIO) return undefined;
    const hint = this.connector?.stats().schedFifo === false ? ' (the reader thread runs without SCHED_FIFO: grant CAP_SYS_NICE)' : '';
    return `${Math.round((w.unresolved / w.execs) * 1000) / 10}% of execs exited before their executable could be read${hint}`;
  }

  /** Losses since the last report become one `sensor.events_lost` audit record with the count and window. */
  private reportLoss(): void {
    const s: Partial<ConnectorStats> = this.connector?.stats() ?? {};
    const now = Date.now();
    const kernelLost = Math.max(s.kernelLost ?? 0, this.reported.kernelLost);
    const queueDrops = s.queueDrops ?? 0;
    const dropped = this.counts.dropped;
    const delta = { kernel: kernelLost - this.reported.kernelLost, native: queueDrops - this.reported.queueDrops, pipeline: dropped - this.reported.dropped };
    const lost = delta.kernel + delta.native + delta.pipeline;
    if (lost <= 0) {
      this.reported = { at: now, kernelLost, queueDrops, dropped };
      return;
    }
    const from = new Date(this.reported.at).toISOString();
    const to = new Date(now).toISOString();
    this.log.warn('process events lost', { lost, from, to });
    // The notice bypasses the sensor's own counters, being about them; when the queue refuses it, the
    // window stays open and the next report covers it.
    const queued = this.ctx.queue.push({
      kind: 'agent_notice',
      ts: now,
      rule: 'sensor.events_lost',
      severity: 'high',
      message: `Process sensor lost ${lost} events between ${from} and ${to}: execs in that window may be missing`,
      details: { sensor: 'process', lost, kernelLost: delta.kernel, nativeQueueDrops: delta.native, pipelineQueueDrops: delta.pipeline, from, to },
    });
    if (!queued) {
      this.counts.noticesDropped++;
      return;
    }
    this.counts.lostReported += lost;
    this.reported = { at: now, kernelLost, queueDrops, dropped };
  }
}

function isDockerCli(e: ConnectorExecEvent): boolean {
  const name = path.basename(e.exe);
  return name === 'docker' || name === 'docker.io' || (e.args.length > 0 && path.basename(e.args[0]) === 'docker');
}

/** A process's identity across scans: an exec keeps its pid and start time but changes the executable or the name. */
function identity(p: { startTicks: number; comm: string }, exe: string): string {
  return `${p.startTicks}\0${exe.endsWith(' (deleted)') ? exe.slice(0, -' (deleted)'.length) : exe}\0${p.comm}`;
}

/** Boot time as epoch ms, from /proc/uptime (10 ms resolution): turns a start time in ticks into a time. */
function bootEpochMs(): number {
  const up = Number(safeRead('/proc/uptime').split(' ')[0]);
  return Number.isFinite(up) ? Date.now() - up * 1000 : 0;
}

function startEpochMs(p: Pick<ProcfsProcess, 'startTicks'>, bootMs: number): number {
  return bootMs + (p.startTicks * 1000) / CLK_TCK;
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
