import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import { JsonlSink } from './jsonl/jsonl-sink.js';
import { OtelSink } from './otel/otel-sink.js';
import type { Sink } from './sink.js';

export interface SinkFactoryContext {
  config: Config;
  log: Logger;
  /** Lets a sink report something (e.g. spool eviction) as an audit record. */
  notify: (rule: string, message: string, details?: Record<string, string | number | boolean>) => void;
}

/** The sinks the config asks for, in one explicit list. */
export function createSinks(ctx: SinkFactoryContext): Sink[] {
  const { config, log } = ctx;
  const sinks: Sink[] = [];
  const out = config.outputs;
  const jsonlToStdout = out.jsonl.path === '-';
  if (out.stdout.enabled && !jsonlToStdout) sinks.push(new JsonlSink({ path: '-', fsyncIntervalMs: out.jsonl.fsyncIntervalMs, log }));
  if (out.jsonl.path) sinks.push(new JsonlSink({ path: out.jsonl.path, fsyncIntervalMs: out.jsonl.fsyncIntervalMs, log }));
  if (out.azureMonitor.connectionString || out.otlp.endpoint) sinks.push(new OtelSink({ config, log: log.child({ sink: 'otel' }), notify: ctx.notify }));
  return sinks;
}
