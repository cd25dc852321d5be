/** One figure of a benchmark run, as written to bench-results.json. */
export interface BenchFigure {
  name: string;
  value: number;
  unit: string;
  baseline?: { name: string; value: number };
  /** value / baseline.value */
  ratio?: number;
  /** Free text shown in the table (e.g. the target). */
  note?: string;
}

export interface Benchmark {
  name: string;
  /** Needs a running Docker engine (and root). */
  needsDocker?: boolean;
  run(): Promise<BenchFigure[]>;
}

export function withBaseline(fig: Omit<BenchFigure, 'baseline' | 'ratio'>, baseline: { name: string; value: number }): BenchFigure {
  return { ...fig, baseline, ratio: baseline.value === 0 ? undefined : fig.value / baseline.value };
}

/** CPU time (user+system) of this process in ms. */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * Decisions per second, from the median batch: each batch is made (untimed) right before it is decided,
 * so its events are new and in cache, as a sensor's are when the pipeline decides them; the median
 * leaves out batches another process or a garbage collection of the copies interrupted.
 */
export function medianBatchRate<T>(batches: number, makeBatch: (b: number) => readonly T[], decideAll: (batch: readonly T[]) => void): number {
  const nsPerDecision: number[] = [];
  for (let b = 0; b < batches; b++) {
    const batch = makeBatch(b);
    const t0 = process.hrtime.bigint();
    decideAll(batch);
    nsPerDecision.push(Number(process.hrtime.bigint() - t0) / batch.length);
  }
  nsPerDecision.sort((x, y) => x - y);
  return 1e9 / nsPerDecision[nsPerDecision.length >> 1];
}

/** One timed batch: its cost per item, and how fast the CPU probe ran right before and right after it. */
export interface ProbedBatch {
  nsPerItem: number;
  probeBefore: number;
  probeAfter: number;
}

/**
 * The batches of `medianBatchRate`, each between two runs of a fixed CPU probe: a loop over the
 * characters of strings in cache, throughput-bound like a decision, with no memory traffic. On this VM
 * the probe runs at one of two speeds (about 2.2 and 4.5 ns a character) that change after anything
 * from 0.1 ms to tens of milliseconds, while a latency-bound loop (a chain of multiplications) keeps its speed: at times the
 * host runs other work on the same physical core. The probe tells the batches of each state apart. When
 * a run never sees the core at full speed, its "full speed" is the shared one (and the probe's slowdown
 * reads ~1): the split can understate, never overstate.
 */
export function probedBatches<T>(batches: number, makeBatch: (b: number) => readonly T[], decideAll: (batch: readonly T[]) => void): ProbedBatch[] {
  const out: ProbedBatch[] = [];
  // The probe's own warm-up: its first runs are interpreted.
  for (let i = 0; i < 200; i++) probeResult[0] ^= probeCharacters();
  for (let b = 0; b < batches; b++) {
    const batch = makeBatch(b);
    const t0 = process.hrtime.bigint();
    probeResult[0] ^= probeCharacters();
    const t1 = process.hrtime.bigint();
    decideAll(batch);
    const t2 = process.hrtime.bigint();
    probeResult[0] ^= probeCharacters();
    const t3 = process.hrtime.bigint();
    out.push({ nsPerItem: Number(t2 - t1) / batch.length, probeBefore: Number(t1 - t0) / PROBE_CHARS, probeAfter: Number(t3 - t2) / PROBE_CHARS });
  }
  return out;
}

export interface SplitRates {
  /** Items/s of the median batch, all batches. */
  all: number;
  /** Of the batches with the probe within 30% of its fastest on both sides (NaN when under 5% of them). */
  fullSpeed: number;
  /** Of the batches with the probe slower than that on both sides (NaN when under 5% of them). */
  shared: number;
  fullSpeedBatches: number;
  sharedBatches: number;
  /** How much slower the probe ran in the shared batches. */
  probeSlowdown: number;
}

/** Rates of probed batches: all together, and of those measured with the core at full speed or shared. */
export function splitByProbe(batches: readonly ProbedBatch[]): SplitRates {
  const fastest = Math.min(...batches.map((b) => Math.min(b.probeBefore, b.probeAfter)));
  const limit = fastest * 1.3;
  const full = batches.filter((b) => b.probeBefore <= limit && b.probeAfter <= limit);
  const shared = batches.filter((b) => b.probeBefore > limit && b.probeAfter > limit);
  // A state seen in fewer batches than this gets no figure (a handful of batches near a switch would be one).
  const enough = Math.max(30, batches.length / 20);
  const median = (xs: number[]) => (xs.length >= enough ? xs.sort((x, y) => x - y)[xs.length >> 1] : NaN);
  const probe = (bs: ProbedBatch[]) => median(bs.map((b) => (b.probeBefore + b.probeAfter) / 2));
  return {
    all: 1e9 / batches.map((b) => b.nsPerItem).sort((x, y) => x - y)[batches.length >> 1],
    fullSpeed: 1e9 / median(full.map((b) => b.nsPerItem)),
    shared: 1e9 / median(shared.map((b) => b.nsPerItem)),
    fullSpeedBatches: full.length,
    sharedBatches: shared.length,
    probeSlowdown: probe(shared) / probe(full),
  };
}

const PROBE_STRINGS = Array.from({ length: 64 }, (_, i) => Buffer.from(`/usr/lib/probe${i}/v2/p${i}/start.sh`).toString());
const PROBE_CHARS = PROBE_STRINGS.reduce((n, s) => n + s.length, 0);
/** Where the probe's sums go, so that the JIT cannot drop the loop. */
const probeResult = new Int32Array(1);

function probeCharacters(): number {
  let sum = 0;
  for (let k = 0; k < PROBE_STRINGS.length; k++) {
    const s = PROBE_STRINGS[k];
    const n = s.length;
    for (let i = 0; i < n; i++) sum = (sum + s.charCodeAt(i)) | 0;
  }
  return sum;
}

/** Event fields the sensors set from string literals (interned, compared by pointer): left as they are. */
const LITERAL_FIELDS = new Set(['kind', 'op', 'direction', 'protocol', 'action', 'scope']);

/**
 * Gives an event new string objects in place (its own and those of its arrays and nested objects). V8
 * caches a string's hash in the string, so a benchmark that decides the same events over and over would
 * look its paths up faster than the agent does, whose every event arrives with strings never hashed
 * before. In place, so that the objects keep the hidden classes the workload gave them (a copy would get
 * others, and the engine would be measured on shapes no sensor makes).
 */
export function refreshStrings(value: object): void {
  const obj = value as Record<string, unknown>;
  for (const k in obj) {
    const v = obj[k];
    if (typeof v === 'string') {
      if (!LITERAL_FIELDS.has(k)) obj[k] = freshString(v);
    } else if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const x: unknown = v[i];
        if (typeof x === 'string') v[i] = freshString(x);
        else if (x !== null && typeof x === 'object') refreshStrings(x);
      }
    } else if (v !== null && typeof v === 'object') refreshStrings(v);
  }
}

function freshString(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}
