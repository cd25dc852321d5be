import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseConfig } from '../agent/config/load.js';
import type { Finding, RunwatchEvent, RunwatchRecord } from '../agent/events/types.js';
import { silentLogger } from '../agent/log.js';
import { Agent } from '../agent/main.js';
import type { SensorHealth } from '../agent/sensors/sensor.js';
import type { DeliveryResult, Sink } from '../agent/sinks/sink.js';
import { cpuMs, withBaseline, type BenchFigure, type Benchmark } from './bench.js';

const exec = promisify(execFile);
const EXECS = 5000;
/** Execs run through the connector agent before anything is measured (JIT warm-up). */
const WARMUP_EXECS = 8000;
const IMAGE = 'runwatch-test/tools:1';
/** A real dynamically linked executable file (busybox `true` would be a shell builtin, no exec at all). */
const TRUE = '/usr/bin/true';
/** `pauseUs` after every 10 execs slows a shell down (busybox runs `usleep` in-process: no exec). */
const stormScript = (execs: number, pauseUs = 0): string =>
  pauseUs
    ? `i=0; while [ $i -lt ${execs} ]; do ${TRUE}; i=$((i+1)); [ $((i % 10)) -ne 0 ] || usleep ${pauseUs}; done`
    : `i=0; while [ $i -lt ${execs} ]; do ${TRUE}; i=$((i+1)); done`;
/** Two shells each pausing this long every 10 execs ran 1,400–1,570 execs/s together here, near the rate the CPU target is stated at. */
const PACED_PAUSE_US = 500;
/** Give up waiting once nothing new arrived for this long after the storm ended. */
const QUIET_MS = 3000;
const CLOCK_TICKS_PER_SEC = 100;
const RUN_LABEL = `runwatch.bench.run=${process.pid}-${Date.now()}`;
const RULES = `apiVersion: runwatch/v1
kind: ImageProfile
name: bench-process
images: [runwatch-test/tools]
process:
  allow:
    - /usr/bin/{true,sleep}
    - exe: /bin/busybox
      names: [sh]
`;

/** How the storm's execs are decided. */
type StormMode = 'allowed' | 'record-each';

interface StormResult {
  seen: number;
  attributed: number;
  resolved: number;
  stormMs: number;
  /** From the storm's start to the last storm exec handled (or giving up). */
  wallMs: number;
  cpuMs: number;
  /** The addon's native threads' share of cpuMs (10 ms resolution); undefined when they could not be found. */
  readerCpuMs: number | undefined;
  /** CPU the storm itself used in the container (cgroup cpuacct), the work being watched. */
  workloadCpuMs: number | undefined;
  /** record-each: exec → record built; allowed: exec → decided. */
  latenciesMs: number[];
  health: SensorHealth;
  lostRecords: number;
}

class CountingSink implements Sink {
  readonly name = 'bench';
  delivered = 0;
  async deliver(batch: readonly RunwatchRecord[]): Promise<DeliveryResult> {
    this.delivered += batch.length;
    return { ok: true };
  }
  async flush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

function removeBenchContainers(): void {
  const ids = execFileSync('docker', ['ps', '-aq', '--filter', `label=${RUN_LABEL}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  if (ids.length) execFileSync('docker', ['rm', '-f', ...ids], { stdio: 'ignore' });
}

/** The container's CPU time in ms from its cgroup (v1 cpuacct, else v2 cpu.stat); undefined where neither is found. */
function containerCpuMs(id: string): number | undefined {
  try {
    return Number(readFileSync(`/sys/fs/cgroup/cpuacct/docker/${id}/cpuacct.usage`, 'utf8')) / 1e6;
  } catch {
    for (const dir of [`/sys/fs/cgroup/docker/${id}`, `/sys/fs/cgroup/system.slice/docker-${id}.scope`]) {
      try {
        const m = /^usage_usec (\d+)/m.exec(readFileSync(`${dir}/cpu.stat`, 'utf8'));
        if (m) return Number(m[1]) / 1000;
      } catch {
        // next layout
      }
    }
    return undefined;
  }
}

const usPerExec = (ms: number): number => (1000 * ms) / EXECS;
/** Agent CPU as % of one core if the storm ran at `rate` execs/s (what the target is stated at). */
const coreAt = (r: StormResult, rate: number): number => (usPerExec(r.cpuMs) * rate) / 1e4;

function readerNote(r: StormResult): string {
  if (r.readerCpuMs === undefined) return 'reader threads not found';
  return `native reader threads ${usPerExec(r.readerCpuMs).toFixed(0)} µs, the rest (JS, GC) ${usPerExec(r.cpuMs - r.readerCpuMs).toFixed(0)} µs`;
}

/** CPU ms of this process's native reader threads (the proc connector's reader "rw-proc" and its per-CPU "rw-exec/N"). */
function readerThreadCpuMs(): number | undefined {
  let ms: number | undefined;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      if (!/^\d+ \(rw-(proc|exec\/\d+)\)/.test(stat)) continue;
      // After "(comm)" the fields start at 3: utime is field 14, stime 15.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ms = (ms ?? 0) + ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS_PER_SEC;
    } catch {
      // the thread ended
    }
  }
  return ms;
}

function percentile(sorted: readonly number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * The whole agent in this process (Docker + process sensors, the real rules decider with a profile that
 * allows the storm, pipeline, a counting sink), through which storms are run. In `record-each` mode every
 * storm exec is also turned into a record (the worst case, and where exec-to-record latency is measured); in
 * `allowed` mode the real decisions stand, so an allowed exec makes no record. A storm exec is one whose
 * parent is the storm's shell: that holds for unresolved and misattributed execs too.
 */
class StormAgent {
  private readonly agent: Agent;
  private readonly stateDir = mkdtempSync(path.join(tmpdir(), 'rw-bench-process-'));
  private mode: StormMode = 'allowed';
  /** The command lines of the running storm's shells, and their pids once seen. */
  private storms = new Set<string>();
  private stormShells = new Set<number>();
  private counts = { seen: 0, attributed: 0, resolved: 0, lostRecords: 0, lastSeenAt: 0 };
  private latenciesMs: number[] = [];

  constructor(
    private readonly containerId: string,
    rulesDir: string,
    processConfig: Record<string, unknown>,
  ) {
    const config = parseConfig(
      JSON.stringify({
        stateDir: this.stateDir,
        outputs: { stdout: { enabled: false }, jsonl: { path: '' } },
        rules: { paths: [rulesDir], watch: false },
        pipeline: { groupWindowSeconds: 0 },
        sensors: { process: { enabled: true, ...processConfig }, file: { enabled: false }, network: { enabled: false } },
        metrics: { enabled: false },
      }),
      path.join(this.stateDir, 'config.yaml'),
    );
    this.agent = new Agent({
      config,
      log: silentLogger,
      extraSinks: [new CountingSink()],
      wrapDecider: (real) => ({ decide: (ev, ctx) => this.decide(real.decide(ev, ctx), ev) }),
      onRecord: (rec) => {
        if (rec.rule === 'bench.exec') this.latenciesMs.push(performance.timeOrigin + performance.now() - Number(rec.details!.execTs));
        else if (rec.rule === 'sensor.events_lost') this.counts.lostRecords++;
      },
    });
  }

  start(): Promise<void> {
    return this.agent.start();
  }

  async stop(): Promise<void> {
    await this.agent.stop();
    rmSync(this.stateDir, { recursive: true, force: true });
  }

  private decide(findings: Finding[], ev: RunwatchEvent): Finding[] {
    if (ev.kind !== 'process_exec') return findings;
    if (ev.containerId === this.containerId && ev.args[0] === 'sh' && ev.args[1] === '-c' && this.storms.has(ev.args[2])) this.stormShells.add(ev.pid);
    if (!this.stormShells.has(ev.ppid)) return findings;
    const c = this.counts;
    c.seen++;
    c.lastSeenAt = Date.now();
    if (ev.containerId === this.containerId) c.attributed++;
    if (ev.resolved && ev.exe === TRUE && ev.args.length === 1 && ev.args[0] === TRUE) c.resolved++;
    if (this.mode === 'allowed') {
      this.latenciesMs.push(performance.timeOrigin + performance.now() - ev.ts);
      return findings;
    }
    return [...findings, { kind: 'audit', rule: 'bench.exec', severity: 'info', message: 'storm exec', details: { execTs: ev.ts } }];
  }

  /** Runs a storm of `execs`, split over `shells` loops at once, and measures the agent until it has handled the last of them. */
  async run(mode: StormMode, execs = EXECS, shells = 1, pauseUs = 0): Promise<StormResult> {
    this.mode = mode;
    // Each shell's own command line, so its shell is told apart from the others and the previous storms'.
    const scripts = Array.from({ length: shells }, (_, i) => `${stormScript(execs / shells, pauseUs)} # ${mode} ${Date.now()} ${i}`);
    this.storms = new Set(scripts);
    this.stormShells = new Set();
    this.counts = { seen: 0, attributed: 0, resolved: 0, lostRecords: 0, lastSeenAt: 0 };
    this.latenciesMs = [];
    const { containerId } = this;
    const workload0 = containerCpuMs(containerId);
    const cpu0 = cpuMs();
    const reader0 = readerThreadCpuMs();
    const t0 = Date.now();
    await Promise.all(scripts.map((script) => exec('docker', ['exec', containerId, 'sh', '-c', script], { timeout: 300_000 })));
    const stormEnd = Date.now();
    const cpuAtStormEnd = cpuMs();
    const readerAtStormEnd = readerThreadCpuMs();
    const workloadCpuMs = workload0 === undefined ? undefined : containerCpuMs(containerId)! - workload0;
    const c = this.counts;
    while (c.seen < execs && Date.now() - Math.max(c.lastSeenAt, stormEnd) < QUIET_MS) await new Promise((r) => setTimeout(r, 5));
    // The agent's share: until the last storm exec was handled (to within the 5 ms poll), or the storm's end if that came later.
    const drained = c.seen >= execs && c.lastSeenAt > stormEnd;
    const wallMs = (drained ? c.lastSeenAt : stormEnd) - t0;
    const cpu = (drained ? cpuMs() : cpuAtStormEnd) - cpu0;
    const reader = drained ? readerThreadCpuMs() : readerAtStormEnd;
    const readerCpuMs = reader === undefined || reader0 === undefined ? undefined : reader - reader0;
    const health = (this.agent.health() as { sensors: { process: SensorHealth } }).sensors.process;
    return { ...c, stormMs: stormEnd - t0, wallMs, cpuMs: cpu, readerCpuMs, workloadCpuMs, latenciesMs: this.latenciesMs, health };
  }
}

/** Runs `fn` with a started StormAgent, stopping it afterwards. */
async function withStormAgent<T>(containerId: string, rulesDir: string, processConfig: Record<string, unknown>, fn: (a: StormAgent) => Promise<T>): Promise<T> {
  const agent = new StormAgent(containerId, rulesDir, processConfig);
  try {
    await agent.start();
    return await fn(agent);
  } finally {
    await agent.stop();
  }
}

/**
 * An exec storm (5,000 execs of /usr/bin/true, as fast as busybox sh goes) in a real container, seen by the
 * process sensor through the whole agent: from the kernel's process connector with the storm allowed (the
 * normal case: no records) and with a record built for every exec (the worst case), then from the /proc
 * polling fallback at its default interval.
 */
export const processBenchmark: Benchmark = {
  name: 'process',
  needsDocker: true,
  async run() {
    const rulesDir = mkdtempSync(path.join(tmpdir(), 'rw-bench-process-rules-'));
    writeFileSync(path.join(rulesDir, 'bench.yaml'), RULES);
    const load1 = loadavg()[0];
    try {
      const { stdout } = await exec('docker', ['run', '-d', '--label', 'runwatch.test=bench', '--label', RUN_LABEL, '--network', 'none', IMAGE]);
      const id = stdout.trim();
      const { cn, fast, paced, all } = await withStormAgent(id, rulesDir, { source: 'connector' }, async (agent) => {
        // A running agent has long compiled its hot paths; a fresh one would spend the storm doing so (V8's
        // optimising compiler on its worker threads, and slower code meanwhile), so the JIT warms up first.
        await agent.run('record-each', WARMUP_EXECS / 2);
        await agent.run('allowed', WARMUP_EXECS / 2);
        return {
          cn: await agent.run('allowed'),
          fast: await agent.run('allowed', EXECS, 2),
          paced: await agent.run('allowed', EXECS, 2, PACED_PAUSE_US),
          all: await agent.run('record-each'),
        };
      });
      // The same storm with one reader thread doing everything, as before the per-CPU readers.
      const one = await withStormAgent(id, rulesDir, { source: 'connector', perCpuReaders: false }, async (agent) => {
        await agent.run('allowed', WARMUP_EXECS / 2);
        return agent.run('allowed');
      });
      const pf = await withStormAgent(id, rulesDir, { source: 'procfs' }, (agent) => agent.run('allowed'));
      const load1End = loadavg()[0];
      const pct = (n: number) => (100 * n) / EXECS;
      const rate = (r: StormResult) => EXECS / (r.stormMs / 1000);
      const core = (r: StormResult) => (100 * r.cpuMs) / r.wallMs;
      const decided = [...cn.latenciesMs].sort((a, b) => a - b);
      const lat = [...all.latenciesMs].sort((a, b) => a - b);
      // The connector's counters run for the agent's life: the last storm's health covers the warm-up and all three.
      const totals = all.health.details ?? {};
      const pfInterval = parseConfig('{}', 'defaults.yaml').sensors.process.procfsIntervalMs;
      const storm = (r: StormResult) => ({ name: 'the storm itself (container cgroup CPU)', value: usPerExec(r.workloadCpuMs ?? NaN) });
      const cpuPerExec = (name: string, r: StormResult, note: string, baseline = storm(r)) =>
        withBaseline(
          { name, value: usPerExec(r.cpuMs), unit: 'µs', note: `${note}; ${readerNote(r)}; target ≤ ~165 µs (25% of a core at 1,500 execs/s)` },
          baseline,
        );
      const figs: BenchFigure[] = [
        {
          name: 'process: storm exec rate in the container',
          value: rate(cn),
          unit: 'execs/s',
          note: `${EXECS} execs of ${TRUE} from one shell in ${cn.stormMs} ms (two shells: ${Math.round(rate(fast))}/s); host load1 ${load1.toFixed(2)} at start, ${load1End.toFixed(2)} at end (shared machine)`,
        },
        withBaseline(
          {
            name: 'process: storm execs seen (connector)',
            value: pct(cn.seen),
            unit: '%',
            note: `${cn.seen}/${EXECS}; two shells ${fast.seen}, paced ${paced.seen}, record-each ${all.seen}; target ≥ 99.9%`,
          },
          { name: `/proc polling every ${pfInterval} ms`, value: pct(pf.seen) },
        ),
        {
          name: 'process: attributed to the storm container',
          value: pct(cn.attributed),
          unit: '%',
          note: `${cn.attributed}/${EXECS}; two shells ${fast.attributed}, paced ${paced.attributed}, record-each ${all.attributed}; target ≥ 99.9%`,
        },
        withBaseline(
          {
            name: 'process: exe + args resolved',
            value: pct(cn.resolved),
            unit: '%',
            note: `${cn.resolved}/${EXECS}; two shells ${fast.resolved}, paced ${paced.resolved}, record-each ${all.resolved}; target ≥ 99%; SCHED_FIFO ${totals.schedFifo}, per-CPU readers ${totals.perCpuReaders}`,
          },
          { name: 'one reader thread (perCpuReaders: false)', value: pct(one.resolved) },
        ),
        cpuPerExec('process: agent CPU per exec, allowed execs (normal case)', cn, `no records, after a ${WARMUP_EXECS}-exec JIT warm-up`),
        {
          name: 'process: agent CPU, allowed execs, as % of one core',
          value: core(cn),
          unit: '%',
          note: `over ${cn.wallMs} ms at ${Math.round(rate(cn))} execs/s (${coreAt(cn, 1500).toFixed(1)}% if at 1,500/s); target ≤ 25% at ~1,500 execs/s`,
        },
        withBaseline(
          {
            name: 'process: agent CPU per exec, one reader thread (perCpuReaders: false)',
            value: usPerExec(one.cpuMs),
            unit: 'µs',
            note: `${Math.round(rate(one))} execs/s; ${readerNote(one)}`,
          },
          { name: 'per-CPU readers (normal case)', value: usPerExec(cn.cpuMs) },
        ),
        cpuPerExec('process: agent CPU per exec, allowed execs, two shells', fast, `${Math.round(rate(fast))} execs/s`),
        {
          name: 'process: agent CPU, allowed execs, two shells, as % of one core',
          value: core(fast),
          unit: '%',
          note: `over ${fast.wallMs} ms at ${Math.round(rate(fast))} execs/s (${coreAt(fast, 1500).toFixed(1)}% if at 1,500/s); target ≤ 25% at ~1,500 execs/s`,
        },
        cpuPerExec('process: agent CPU per exec, allowed execs, two paced shells', paced, `${Math.round(rate(paced))} execs/s`),
        {
          name: 'process: agent CPU, allowed execs, two paced shells, as % of one core',
          value: core(paced),
          unit: '%',
          note: `over ${paced.wallMs} ms at ${Math.round(rate(paced))} execs/s (each shell pauses ${PACED_PAUSE_US} µs every 10 execs); resolved ${paced.resolved}/${EXECS}; target ≤ 25% at ~1,500 execs/s`,
        },
        cpuPerExec(
          'process: agent CPU per exec, a record per exec (worst case)',
          all,
          `${core(all).toFixed(1)}% of a core at ${Math.round(rate(all))} execs/s`,
          {
            name: 'allowed execs (normal case)',
            value: usPerExec(cn.cpuMs),
          },
        ),
        {
          name: 'process: exec → decided, p99 (allowed execs)',
          value: percentile(decided, 99),
          unit: 'ms',
          note: `p50 ${percentile(decided, 50).toFixed(1)} ms`,
        },
        { name: 'process: exec → record built, p50 (worst case)', value: percentile(lat, 50), unit: 'ms', note: `${lat.length} records` },
        {
          name: 'process: exec → record built, p99 (worst case)',
          value: percentile(lat, 99),
          unit: 'ms',
          note: `max ${percentile(lat, 100).toFixed(1)} ms; target p99 ≤ 50 ms`,
        },
        {
          name: 'process: events lost (kernel + native queue)',
          value: Number(totals.kernelLost) + Number(totals.queueDrops),
          unit: 'events',
          note: `all connector storms; ${cn.lostRecords + fast.lostRecords + paced.lostRecords + all.lostRecords} sensor.events_lost records; enobufs ${totals.enobufs}; ${totals.unresolved} execs (any) unresolved`,
        },
        withBaseline(
          {
            name: `process: /proc polling (${pfInterval} ms) storm execs seen`,
            value: pf.seen,
            unit: 'execs',
            note: `of ${EXECS} at ${Math.round(rate(pf))} execs/s`,
          },
          { name: 'connector', value: cn.seen },
        ),
        withBaseline(
          { name: `process: /proc polling (${pfInterval} ms) CPU as % of one core`, value: core(pf), unit: '%' },
          { name: 'connector, allowed execs', value: core(cn) },
        ),
      ];
      return figs;
    } finally {
      removeBenchContainers();
      rmSync(rulesDir, { recursive: true, force: true });
    }
  },
};
