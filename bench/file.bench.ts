import { execFile, execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { watch as chokidarWatch } from 'chokidar';
import { parseConfig } from '../agent/config/load.js';
import type { RunwatchRecord } from '../agent/events/types.js';
import { silentLogger } from '../agent/log.js';
import { Agent } from '../agent/main.js';
import { processInotifyWatches } from '../agent/sensors/file/inotify-stats.js';
import { isInUpperLayer } from '../agent/sensors/file/upper-layer.js';
import type { DeliveryResult, Sink } from '../agent/sinks/sink.js';
import { cpuMs, withBaseline, type BenchFigure, type Benchmark } from './bench.js';

const exec = promisify(execFile);
const DIRS = 200;
const PER_DIR = 100;
const FILES = DIRS * PER_DIR;
const STORM = `i=0; while [ $i -lt ${DIRS} ]; do mkdir -p /data/storm/d$i; j=0; while [ $j -lt ${PER_DIR} ]; do echo x > /data/storm/d$i/f$j; j=$((j+1)); done; i=$((i+1)); done`;
const STORM_FILE = /^\/data\/storm\/d\d+\/f\d+$/;
/** Give up waiting once nothing new arrived for this long after the storm ended. */
const QUIET_MS = 10_000;
const RUN_LABEL = `runwatch.bench.run=${process.pid}-${Date.now()}`;

interface StormResult {
  seen: number;
  stormMs: number;
  /** From the newest file's mtime (the kernel's time of the last write) to the moment its change was handled. */
  lastWriteToLastEventMs: number;
  cpuMs: number;
  rssGrowthMb: number;
  /** inotify watches on the storm container's directories, counted in the kernel at the end. */
  watches: number;
}

class CountingSink implements Sink {
  readonly name = 'bench';
  readonly records: RunwatchRecord[] = [];
  async deliver(batch: readonly RunwatchRecord[]): Promise<DeliveryResult> {
    this.records.push(...batch);
    return { ok: true };
  }
  async flush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

async function startContainer(): Promise<{ id: string; upper: string }> {
  const { stdout } = await exec('docker', [
    'run',
    '-d',
    '--label',
    'runwatch.test=bench',
    '--label',
    RUN_LABEL,
    '--network',
    'none',
    'runwatch-test/busybox:1',
    'sleep',
    '3600',
  ]);
  const id = stdout.trim();
  const upper = (await exec('docker', ['inspect', '-f', '{{.GraphDriver.Data.UpperDir}}', id])).stdout.trim();
  return { id, upper };
}

function removeBenchContainers(): void {
  const ids = execFileSync('docker', ['ps', '-aq', '--filter', `label=${RUN_LABEL}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  if (ids.length) execFileSync('docker', ['rm', '-f', ...ids], { stdio: 'ignore' });
}

function newestStormMtime(upper: string): number {
  let newest = 0;
  const root = path.join(upper, 'data/storm');
  for (const d of readdirSync(root)) for (const f of readdirSync(path.join(root, d))) newest = Math.max(newest, lstatSync(path.join(root, d, f)).mtimeMs);
  return newest;
}

/** Watches on any inode of the layer: directories, and files too (chokidar watches each file). */
function watchesOn(upper: string): number {
  const inodes = new Set([statSync(upper).ino]);
  for (const d of readdirSync(upper, { withFileTypes: true, recursive: true })) inodes.add(lstatSync(path.join(d.parentPath, d.name)).ino);
  return (processInotifyWatches() ?? []).filter((ino) => inodes.has(ino)).length;
}

/** Runs the storm in the container while `seen()` counts what the watcher under test reported, and measures the watcher's process. */
async function storm(target: { id: string; upper: string }, seen: () => { count: number; lastAt: number }): Promise<StormResult> {
  let peakRss = process.memoryUsage().rss;
  const rss0 = peakRss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);
  const cpu0 = cpuMs();
  const t0 = Date.now();
  await exec('docker', ['exec', target.id, 'sh', '-c', STORM], { timeout: 300_000 });
  const stormMs = Date.now() - t0;
  let last = seen().count;
  let progressAt = Date.now();
  while (seen().count < FILES && Date.now() - progressAt < QUIET_MS) {
    await new Promise((r) => setTimeout(r, 20));
    if (seen().count !== last) [last, progressAt] = [seen().count, Date.now()];
  }
  const cpu = cpuMs() - cpu0;
  clearInterval(sampler);
  const s = seen();
  return {
    seen: s.count,
    stormMs,
    lastWriteToLastEventMs: s.lastAt - newestStormMtime(target.upper),
    cpuMs: cpu,
    rssGrowthMb: (peakRss - rss0) / 2 ** 20,
    watches: watchesOn(target.upper),
  };
}

/** The agent (Docker + file sensors, pipeline, grouping) in this process; every storm change becomes an alert grouped by pathPrefix. */
async function runwatchStorm(target: { id: string; upper: string }): Promise<StormResult & { alerts: number; records: number; countedExactly: boolean }> {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'rw-bench-file-'));
  const config = parseConfig(
    JSON.stringify({
      stateDir,
      outputs: { stdout: { enabled: false }, jsonl: { path: '' } },
      rules: { watch: false },
      pipeline: { groupWindowSeconds: 60 },
      sensors: { process: { enabled: false }, network: { enabled: false }, file: { enabled: true } },
      metrics: { enabled: false },
    }),
    path.join(stateDir, 'config.yaml'),
  );
  const sink = new CountingSink();
  const agent = new Agent({ config, log: silentLogger, extraSinks: [sink] });
  const created = new Set<string>();
  let lastAt = 0;
  let alerts = 0;
  let result: StormResult;
  try {
    await agent.start();
    agent.setDecider({
      decide: (ev) => {
        if (ev.kind !== 'file_change' || ev.containerId !== target.id || !ev.path.startsWith('/data/storm/')) return [];
        if (ev.op === 'create' && STORM_FILE.test(ev.path) && !created.has(ev.path)) {
          created.add(ev.path);
          lastAt = Date.now();
        }
        alerts++;
        return [{ kind: 'alert', rule: 'bench.file_write', severity: 'low', message: `File ${ev.path} was written`, subject: ev.pathPrefix }];
      },
    });
    result = await storm(target, () => ({ count: created.size, lastAt }));
  } finally {
    await agent.stop(); // flushes the open groups, so the records below are complete
    rmSync(stateDir, { recursive: true, force: true });
  }
  const records = sink.records.filter((r) => r.rule === 'bench.file_write');
  return { ...result, alerts, records: records.length, countedExactly: records.reduce((n, r) => n + (r.count ?? 1), 0) === alerts };
}

/** The design's first choice, chokidar 5, watching the same kind of storm: the baseline. */
async function chokidarStorm(target: { id: string; upper: string }): Promise<StormResult> {
  const created = new Set<string>();
  let lastAt = 0;
  const watcher = chokidarWatch(target.upper, { ignoreInitial: true, followSymlinks: false });
  watcher.on('add', (p: string) => {
    const inside = p.slice(target.upper.length);
    if (STORM_FILE.test(inside) && !created.has(inside)) {
      created.add(inside);
      lastAt = Date.now();
    }
  });
  await new Promise<void>((r) => watcher.once('ready', () => r()));
  try {
    return await storm(target, () => ({ count: created.size, lastAt }));
  } finally {
    await watcher.close();
  }
}

/** isInUpperLayer calls/s for one path, against one bare lstat of the same host path. */
function drift(upper: string, file: string, expected: boolean, n: number): { perSec: number; lstatPerSec: number } {
  const info = { upperDir: upper };
  for (let i = 0; i < n / 10; i++) {
    // Warm-up for both: JIT and the kernel's dentry cache.
    isInUpperLayer(info, file);
    lstatSync(upper + file, { throwIfNoEntry: false });
  }
  let t0 = performance.now();
  for (let i = 0; i < n; i++) if (isInUpperLayer(info, file) !== expected) throw new Error(`isInUpperLayer(${file}) should be ${expected}`);
  const perSec = n / ((performance.now() - t0) / 1000);
  t0 = performance.now();
  for (let i = 0; i < n; i++) lstatSync(upper + file, { throwIfNoEntry: false });
  return { perSec, lstatPerSec: n / ((performance.now() - t0) / 1000) };
}

/**
 * A write storm (20,000 files in 200 directories, as fast as busybox sh goes) in a real container, seen by
 * the file sensor through the whole agent, against chokidar 5 watching a second container's storm.
 */
export const fileBenchmark: Benchmark = {
  name: 'file',
  needsDocker: true,
  async run() {
    try {
      const a = await startContainer();
      const rw = await runwatchStorm(a);
      const b = await startContainer();
      const ck = await chokidarStorm(b);
      const image = drift(a.upper, '/bin/busybox', false, 200_000);
      const written = drift(a.upper, '/data/storm/d7/f7', true, 100_000);
      const pct = (r: StormResult) => (100 * r.seen) / FILES;
      const figs: BenchFigure[] = [
        withBaseline(
          { name: 'file: storm changes seen (20,000 files / 200 dirs)', value: pct(rw), unit: '%', note: 'target 100%' },
          { name: 'chokidar 5', value: pct(ck) },
        ),
        withBaseline(
          { name: 'file: last write → last event handled', value: rw.lastWriteToLastEventMs, unit: 'ms' },
          { name: 'chokidar 5', value: ck.lastWriteToLastEventMs },
        ),
        withBaseline({ name: 'file: agent CPU during storm + drain', value: rw.cpuMs, unit: 'ms' }, { name: 'chokidar 5 alone', value: ck.cpuMs }),
        withBaseline(
          { name: 'file: agent RSS growth (peak)', value: rw.rssGrowthMb, unit: 'MB', note: 'target ≤ 100 MB' },
          { name: 'chokidar 5', value: ck.rssGrowthMb },
        ),
        withBaseline({ name: 'file: inotify watches for the storm container', value: rw.watches, unit: 'watches' }, { name: 'chokidar 5', value: ck.watches }),
        { name: 'file: storm duration in the container', value: rw.stormMs, unit: 'ms', note: `${Math.round(FILES / (rw.stormMs / 1000))} files/s` },
        {
          name: 'file: alerts → records after grouping (subject pathPrefix)',
          value: rw.records,
          unit: 'records',
          note: `${rw.alerts} alerts, counts ${rw.countedExactly ? 'exact' : 'NOT exact'}`,
        },
        withBaseline(
          { name: 'file: isInUpperLayer, image binary (no) calls/s', value: image.perSec, unit: 'calls/s' },
          { name: 'one bare lstatSync', value: image.lstatPerSec },
        ),
        withBaseline(
          { name: 'file: isInUpperLayer, written file (yes) calls/s', value: written.perSec, unit: 'calls/s', note: 'also lstats each ancestor' },
          { name: 'one bare lstatSync', value: written.lstatPerSec },
        ),
      ];
      return figs;
    } finally {
      removeBenchContainers();
    }
  },
};
