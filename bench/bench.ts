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
