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
