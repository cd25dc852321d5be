import type { ResourceSampleEvent, RunwatchRecord } from '../events/types.js';

/** Like OTel's ExportResult: success, or a failure the pipeline retries (retriable) or counts as lost. */
export type DeliveryResult = { ok: true } | { ok: false; retriable: boolean; error: string };

/**
 * Where records go. A sink only delivers: it never filters or rewrites. Its contract follows OTel's
 * LogRecordExporter: deliver a batch, flush, shut down. A sink that returns ok has taken responsibility
 * for the batch (written it to a file, or to its durable spool).
 */
export interface Sink {
  readonly name: string;
  deliver(batch: readonly RunwatchRecord[]): Promise<DeliveryResult>;
  /** Resource samples for sinks that export metrics; sinks that do not simply leave it out. */
  recordMetrics?(samples: readonly ResourceSampleEvent[]): void;
  flush(): Promise<void>;
  shutdown(): Promise<void>;
  /** Figures for the health report. */
  stats?(): Record<string, number | string | boolean>;
}
