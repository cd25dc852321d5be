import { writeFileSync } from 'node:fs';
import type { Benchmark, BenchFigure } from './bench.js';
import { exportBenchmark } from './export.bench.js';
import { detectionsBenchmark } from './detections.bench.js';
import { fileBenchmark } from './file.bench.js';
import { networkBenchmark } from './network.bench.js';
import { pipelineBenchmark } from './pipeline.bench.js';
import { processBenchmark } from './process.bench.js';
import { resourcesBenchmark } from './resources.bench.js';
import { rulesBenchmark } from './rules.bench.js';

/** Every benchmark the project has, in one explicit list. */
const benchmarks: Benchmark[] = [
  pipelineBenchmark,
  processBenchmark,
  resourcesBenchmark,
  networkBenchmark,
  fileBenchmark,
  rulesBenchmark,
  detectionsBenchmark,
  exportBenchmark,
];

function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  return Number(n.toPrecision(4)).toString();
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const results: BenchFigure[] = [];
  for (const b of benchmarks) {
    if (only.length && !only.some((o) => b.name.includes(o))) continue;
    process.stderr.write(`bench: ${b.name} …\n`);
    try {
      const figs = await b.run();
      results.push(...figs);
      for (const f of figs) {
        const ratio = f.ratio !== undefined ? `  ×${fmt(f.ratio)} vs ${f.baseline?.name} (${fmt(f.baseline?.value ?? 0)})` : '';
        process.stdout.write(`${f.name.padEnd(60)} ${fmt(f.value).padStart(14)} ${f.unit.padEnd(12)}${ratio}${f.note ? `  [${f.note}]` : ''}\n`);
      }
    } catch (err) {
      process.stdout.write(`${b.name.padEnd(60)} FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    }
  }
  writeFileSync('bench-results.json', JSON.stringify(results, null, 2) + '\n');
  process.stderr.write(`bench: wrote bench-results.json (${results.length} figures)\n`);
}

await main();
