import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onTestFinished } from 'vitest';
import { parseConfig, type Config } from '../../agent/config/load.js';
import type { ResourceSampleEvent, RunwatchRecord } from '../../agent/events/types.js';
import { createLogger, silentLogger, type Logger } from '../../agent/log.js';
import { Agent } from '../../agent/main.js';
import type { DeliveryResult, Sink } from '../../agent/sinks/sink.js';

/** Collects what the pipeline delivers; a real Sink, used in place of a remote endpoint. */
export class MemorySink implements Sink {
  readonly name = 'memory';
  readonly records: RunwatchRecord[] = [];
  readonly samples: ResourceSampleEvent[] = [];
  async deliver(batch: readonly RunwatchRecord[]): Promise<DeliveryResult> {
    this.records.push(...batch);
    return { ok: true };
  }
  recordMetrics(samples: readonly ResourceSampleEvent[]): void {
    this.samples.push(...samples);
  }
  async flush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

export interface TestAgent {
  agent: Agent;
  config: Config;
  sink: MemorySink;
  records: RunwatchRecord[];
  stateDir: string;
  /** Resolves with the first record matching, or rejects after `timeoutMs` listing what did arrive. */
  waitForRecord(pred: (r: RunwatchRecord) => boolean, timeoutMs?: number): Promise<RunwatchRecord>;
  stop(): Promise<void>;
}

export async function waitFor<T>(probe: () => T | undefined | false, timeoutMs: number, what: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Runs the real agent in this process with a config built from `overrides` (merged over test defaults:
 * temp state dir, no stdout, no grouping). Stopped automatically when the test finishes.
 */
export async function startTestAgent(overrides: Record<string, unknown> = {}, opts: { log?: Logger; autoStop?: boolean } = {}): Promise<TestAgent> {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'runwatch-test-'));
  const base = {
    stateDir,
    outputs: { stdout: { enabled: false }, jsonl: { path: path.join(stateDir, 'records.jsonl') } },
    pipeline: { groupWindowSeconds: 0 },
    rules: { watch: false },
    sensors: { process: { enabled: false }, file: { enabled: false }, network: { enabled: false } },
    metrics: { enabled: false },
  };
  const config = parseConfig(JSON.stringify(deepMerge(base, overrides)), path.join(stateDir, 'config.yaml'));
  const sink = new MemorySink();
  const log = opts.log ?? (process.env.RUNWATCH_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger);
  const agent = new Agent({ config, log, extraSinks: [sink] });
  await agent.start();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await agent.stop();
    rmSync(stateDir, { recursive: true, force: true });
  };
  if (opts.autoStop !== false) onTestFinished(stop);
  return {
    agent,
    config,
    sink,
    records: sink.records,
    stateDir,
    stop,
    waitForRecord: (pred, timeoutMs = 15_000) =>
      waitFor(
        () => sink.records.find(pred),
        timeoutMs,
        () => `a matching record; got rules: ${sink.records.map((r) => r.rule).join(', ') || 'none'}`,
      ),
  };
}

export function deepMerge<T extends Record<string, unknown>>(a: T, b: Record<string, unknown>): T {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
        ? deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out as T;
}
