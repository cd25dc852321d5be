import path from 'node:path';
import type { Config } from '../../config/load.js';
import { errorMessage, RunwatchError } from '../../errors.js';
import type { ResourceSampleEvent, RunwatchRecord } from '../../events/types.js';
import type { Logger } from '../../log.js';
import { RecordSpool, type SpoolEviction } from '../../pipeline/spool.js';
import { SpoolDrainer } from '../../pipeline/spool-drainer.js';
import type { DeliveryResult, Sink } from '../sink.js';
import { azureMonitorBackend } from './azure-monitor.js';
import { parseConnectionString } from './breeze.js';
import type { ExportBackend } from './export-backend.js';
import { runwatchResource } from './otel-resource.js';
import { otlpBackend } from './otlp.js';
import { ResourceMetrics } from './resource-metrics.js';

type Notify = (rule: string, message: string, details?: Record<string, string | number | boolean>) => void;

export interface OtelSinkOptions {
  config: Config;
  log: Logger;
  /** Reports spool eviction, rejected records and possible duplicates as audit records. */
  notify: Notify;
}

/** How long shutdown lets a healthy endpoint take the backlog before leaving the rest spooled for the next start. */
const DRAIN_ON_SHUTDOWN_MS = 5000;

/** The backends the config asks for: Azure Monitor, OTLP, or both. */
export function exportBackends(config: Config): ExportBackend[] {
  const out = config.outputs;
  const resource = runwatchResource(config.host);
  const requestTimeoutMs = out.spool.requestTimeoutMs;
  const backends: ExportBackend[] = [];
  const az = out.azureMonitor;
  if (az.connectionString) {
    const field = az.connectionStringFile ? 'outputs.azureMonitor.connectionStringFile' : 'outputs.azureMonitor.connectionString';
    const connection = parseConnectionString(az.connectionString, { allowHttpLoopback: az.allowHttpLoopback, where: { file: config.source, field } });
    backends.push(azureMonitorBackend({ connection, resource, requestTimeoutMs }));
  }
  if (out.otlp.endpoint) {
    if (!/^https?:\/\/[^/]/.test(out.otlp.endpoint))
      throw new RunwatchError('RW_CONFIG_INVALID', 'the OTLP endpoint must be an http(s) URL, e.g. http://127.0.0.1:4318', {
        file: config.source,
        field: 'outputs.otlp.endpoint',
      });
    backends.push(otlpBackend({ endpoint: out.otlp.endpoint, headers: out.otlp.headers, resource, requestTimeoutMs }));
  }
  return backends;
}

/**
 * Alerts and audit records as custom events (Application Insights) or log records (OTLP), resource samples as
 * metrics. `deliver` returns ok once the batch is fsynced in the spool; one drainer per backend sends it on and
 * acknowledges only what the endpoint accepted (docs/export.md).
 */
export class OtelSink implements Sink {
  readonly name: string;
  private readonly spool: RecordSpool;
  private readonly drainers: SpoolDrainer[];
  private readonly metrics: ResourceMetrics | undefined;
  private closed = false;

  constructor(private readonly opts: OtelSinkOptions & { backends?: ExportBackend[] }) {
    const { config, log } = opts;
    const backends = opts.backends ?? exportBackends(config);
    if (backends.length === 0) throw new RunwatchError('RW_SINK', 'the OpenTelemetry sink needs outputs.azureMonitor or outputs.otlp');
    this.name = `otel:${backends.map((b) => b.name).join('+')}`;
    const spoolCfg = config.outputs.spool;
    this.spool = new RecordSpool({
      dir: path.join(config.stateDir, 'spool'),
      maxBytes: spoolCfg.maxBytes,
      consumers: backends.map((b) => b.name),
      log,
      onEvict: (e) => this.onEvict(e),
    });
    if (config.metrics.enabled) {
      this.metrics = new ResourceMetrics({
        resource: runwatchResource(config.host),
        backends,
        intervalMs: config.metrics.intervalSeconds * 1000,
        exportTimeoutMs: spoolCfg.requestTimeoutMs,
        log,
      });
    }
    this.drainers = backends.map(
      (b) =>
        new SpoolDrainer({
          spool: this.spool,
          destination: b.records,
          log: log.child({ destination: b.name }),
          notify: opts.notify,
          onRejected: (n) => this.metrics?.countDrop('export_rejected', n, { destination: b.name }),
          retryInitialMs: spoolCfg.retryInitialMs,
          retryMaxMs: spoolCfg.retryMaxMs,
        }),
    );
    for (const d of this.drainers) d.start();
    log.info('export started', { destinations: backends.map((b) => b.name), spoolBytes: this.spool.bytes, metrics: config.metrics.enabled });
  }

  async deliver(batch: readonly RunwatchRecord[]): Promise<DeliveryResult> {
    if (this.closed) return { ok: false, retriable: true, error: 'sink is shut down' };
    try {
      this.spool.append(batch);
      return { ok: true };
    } catch (err) {
      return { ok: false, retriable: true, error: errorMessage(err) };
    }
  }

  recordMetrics(samples: readonly ResourceSampleEvent[]): void {
    this.metrics?.record(samples);
  }

  /** Records are durable at every append; this exports the current metric values. */
  async flush(): Promise<void> {
    await this.metrics?.flush();
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.drainers.map((d) => d.stop(DRAIN_ON_SHUTDOWN_MS)));
    this.spool.close();
    try {
      await this.metrics?.shutdown();
    } catch (err) {
      this.opts.log.warn('metrics shutdown failed', { error: errorMessage(err) });
    }
    for (const d of this.drainers) await d.destination.shutdown().catch(() => undefined);
  }

  stats(): Record<string, number | string | boolean> {
    const out: Record<string, number | string | boolean> = {
      spoolBytes: this.spool.bytes,
      spoolSegments: this.spool.segmentCount,
      ...prefixed('spool', this.spool.counters),
    };
    for (const d of this.drainers) Object.assign(out, prefixed(d.name, d.health()), { [`${d.name}.evicted`]: this.spool.evictedByConsumer[d.name] ?? 0 });
    if (this.metrics) Object.assign(out, prefixed('dropped', this.metrics.dropped));
    return out;
  }

  private onEvict(e: SpoolEviction): void {
    const lost = Math.max(0, ...Object.values(e.lostByConsumer));
    for (const [destination, n] of Object.entries(e.lostByConsumer)) this.metrics?.countDrop('spool_evicted', n, { destination });
    this.opts.log.warn('spool full, evicted the oldest records', { segments: e.segments, bytes: e.bytes, records: lost });
    this.opts.notify(
      'runwatch.spool_evicted',
      `export spool reached its bound of ${this.opts.config.outputs.spool.maxBytes} bytes: evicted ${lost} undelivered record(s), oldest first`,
      {
        records: lost,
        bytes: e.bytes,
        segments: e.segments,
        ...Object.fromEntries(Object.entries(e.lostByConsumer).map(([d, n]) => [`lost.${d}`, n])),
      },
    );
  }
}

function prefixed(prefix: string, values: object): Record<string, number | string | boolean> {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [`${prefix}.${k}`, v as number | string | boolean]));
}
