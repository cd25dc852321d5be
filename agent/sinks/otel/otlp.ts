import { ExportResultCode } from '@opentelemetry/core';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import type { Resource } from '@opentelemetry/resources';
import type { RunwatchRecord } from '../../events/types.js';
import type { SendResult, SpoolDestination } from '../../pipeline/spool-drainer.js';
import { RETRIABLE_ITEM_STATUS, requestFailure } from './breeze.js';
import type { ExportBackend } from './export-backend.js';
import { toLogRecord } from './record-log.js';

/**
 * Records to an OpenTelemetry Collector through the OTLP/HTTP log exporter. Unlike beta.42's Azure exporter,
 * its result is truthful: it retries 429/502/503/504 itself within the timeout and reports FAILED otherwise.
 * OTLP partial success (`rejected_log_records`) must not be retried by the spec; the exporter logs it.
 */
export class OtlpDestination implements SpoolDestination {
  readonly name = 'otlp';
  private readonly exporter: OTLPLogExporter;

  constructor(private readonly opts: { endpoint: string; headers: Record<string, string>; resource: Resource; requestTimeoutMs: number }) {
    this.exporter = new OTLPLogExporter({
      url: `${opts.endpoint.replace(/\/+$/, '')}/v1/logs`,
      headers: { ...opts.headers },
      timeoutMillis: opts.requestTimeoutMs,
    });
  }

  send(records: readonly RunwatchRecord[], signal: AbortSignal): Promise<SendResult> {
    const logs = records.map((r) => toLogRecord(r, this.opts.resource));
    return new Promise<SendResult>((resolve) => {
      const onAbort = () => resolve({ kind: 'failed', retriable: true, ambiguous: true, error: 'request abandoned at shutdown' });
      signal.addEventListener('abort', onAbort, { once: true });
      this.exporter.export(logs, (result) => {
        signal.removeEventListener('abort', onAbort);
        if (result.code === ExportResultCode.SUCCESS) return resolve({ kind: 'items', outcomes: records.map(() => 'accepted') });
        const status = (result.error as { code?: unknown } | undefined)?.code;
        // The exporter gave up on retriable HTTP answers (429/502/503/504): the server said no, nothing was taken.
        if (result.error?.message === 'Export failed with retryable status')
          return resolve({ kind: 'failed', retriable: true, ambiguous: false, error: 'HTTP retriable status' });
        if (typeof status === 'number') {
          return resolve({
            kind: 'failed',
            retriable: RETRIABLE_ITEM_STATUS.has(status) || status === 401 || status === 403,
            ambiguous: false,
            status,
            error: `HTTP ${status}`,
          });
        }
        resolve(requestFailure(result.error));
      });
    });
  }

  shutdown(): Promise<void> {
    return this.exporter.shutdown();
  }
}

/** OTLP/HTTP: records through the log exporter, metrics through the metric exporter (cumulative temporality). */
export function otlpBackend(opts: { endpoint: string; headers: Record<string, string>; resource: Resource; requestTimeoutMs: number }): ExportBackend {
  const exporter = new OTLPMetricExporter({
    url: `${opts.endpoint.replace(/\/+$/, '')}/v1/metrics`,
    headers: { ...opts.headers },
    timeoutMillis: opts.requestTimeoutMs,
  });
  return { name: 'otlp', records: new OtlpDestination(opts), metrics: { exporter } };
}
