import type { Attributes, Counter } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import type { ResourceSampleEvent } from '../../events/types.js';
import type { Logger } from '../../log.js';
import { CountingMetricExporter, type ExportBackend } from './export-backend.js';
import { runwatchVersion } from './otel-resource.js';

/** Where something was dropped; exported as `runwatch.dropped{stage}` (runwatch_dropped_total in Prometheus terms). */
export type DropStage = 'metrics_series' | 'metrics_unattributed' | 'metrics_export' | 'spool_evicted' | 'export_rejected';

export interface ResourceMetricsOptions {
  resource: Resource;
  backends: readonly ExportBackend[];
  intervalMs: number;
  exportTimeoutMs: number;
  log: Logger;
  /** Containers tracked at once; samples of more are dropped (counted). */
  maxSeries?: number;
}

interface Latest {
  sample: ResourceSampleEvent;
  attributes: Attributes;
  seenAt: number;
}

/** "acr.example.io/web:1" → "acr.example.io/web" (semconv container.image.name has no tag or digest). */
export function imageName(reference: string): string {
  const noDigest = reference.split('@')[0];
  const colon = noDigest.lastIndexOf(':');
  return colon > noDigest.lastIndexOf('/') ? noDigest.slice(0, colon) : noDigest;
}

/**
 * Resource samples as OpenTelemetry metrics through one MeterProvider with one periodic reader per backend.
 * Sensors push samples; observable instruments report the latest sample of each container at every export,
 * so each interval carries one point per container whatever the sampling rate. Network and disk figures are
 * cumulative counters (as cgroups and the stats API give them): Azure gets per-interval deltas, OTLP cumulative sums.
 */
export class ResourceMetrics {
  readonly dropped: Record<DropStage, number> = { metrics_series: 0, metrics_unattributed: 0, metrics_export: 0, spool_evicted: 0, export_rejected: 0 };
  private readonly latest = new Map<string, Latest>();
  private readonly provider: MeterProvider;
  private readonly droppedCounter: Counter;
  private readonly maxSeries: number;

  constructor(private readonly opts: ResourceMetricsOptions) {
    this.maxSeries = opts.maxSeries ?? 10_000;
    const readers = opts.backends.map(
      (b) =>
        new PeriodicExportingMetricReader({
          exporter: new CountingMetricExporter(
            b.metrics.exporter,
            (points, reason) => this.countDrop('metrics_export', points, { destination: b.name }, reason),
            b.metrics.wire,
          ),
          exportIntervalMillis: opts.intervalMs,
          exportTimeoutMillis: Math.min(opts.exportTimeoutMs, opts.intervalMs),
        }),
    );
    this.provider = new MeterProvider({ resource: opts.resource, readers });
    const meter = this.provider.getMeter('runwatch', runwatchVersion());
    this.droppedCounter = meter.createCounter('runwatch.dropped', { description: 'Records or metric points runwatch dropped, by stage', unit: '{item}' });
    const gauge = (name: string, unit: string, description: string) => meter.createObservableGauge(name, { unit, description });
    const counter = (name: string, unit: string, description: string) => meter.createObservableCounter(name, { unit, description });
    const c = {
      cpuUsage: gauge('container.cpu.usage', '{cpu}', 'CPU used by the container, in cores'),
      cpuUtilization: gauge('container.cpu.utilization', '1', 'CPU used as a fraction of the limit (of the host cores without one)'),
      memoryUsage: gauge('container.memory.usage', 'By', 'Memory used by the container'),
      memoryLimit: gauge('container.memory.limit', 'By', 'Memory limit of the container'),
      memoryUtilization: gauge('container.memory.utilization', '1', 'Memory used as a fraction of the limit'),
      networkIo: counter('container.network.io', 'By', 'Network bytes received and transmitted'),
      diskIo: counter('container.disk.io', 'By', 'Block I/O bytes read and written'),
      pids: gauge('container.pids.count', '{pid}', 'Tasks in the container (cgroup pids)'),
    };
    const h = {
      cpuUtilization: gauge('system.cpu.utilization', '1', 'Host CPU in use, fraction of all cores'),
      load1: gauge('system.cpu.load_average.1m', '{thread}', 'Host load average over 1 minute'),
      memoryUsage: gauge('system.memory.usage', 'By', 'Host memory in use'),
      memoryLimit: gauge('system.memory.limit', 'By', 'Host memory in total'),
      memoryUtilization: gauge('system.memory.utilization', '1', 'Host memory in use, fraction'),
      filesystemUsage: gauge('system.filesystem.usage', 'By', 'Host disk space by state'),
      filesystemLimit: gauge('system.filesystem.limit', 'By', 'Host disk size'),
      networkIo: counter('system.network.io', 'By', 'Host network bytes received and transmitted'),
      diskIo: counter('system.disk.io', 'By', 'Host block I/O bytes read and written'),
      processCount: gauge('system.process.count', '{process}', 'Processes on the host'),
    };
    meter.addBatchObservableCallback(
      (obs) => {
        const put = (inst: Parameters<typeof obs.observe>[0], value: number | undefined, attrs: Attributes) => {
          if (value !== undefined && Number.isFinite(value)) obs.observe(inst, value, attrs);
        };
        const staleBefore = Date.now() - 3 * this.opts.intervalMs;
        for (const [key, l] of this.latest) {
          // A container that stopped reporting three intervals ago is gone: stop exporting its last values.
          if (l.seenAt < staleBefore) {
            this.latest.delete(key);
            continue;
          }
          const s = l.sample;
          const a = l.attributes;
          if (s.scope === 'container') {
            put(c.cpuUsage, s.cpuCores, a);
            put(c.cpuUtilization, pct(s.cpuPercent), a);
            put(c.memoryUsage, s.memoryBytes, a);
            put(c.memoryLimit, s.memoryLimitBytes || undefined, a);
            put(c.memoryUtilization, pct(s.memoryPercent), a);
            put(c.networkIo, s.networkRxBytes, { ...a, 'network.io.direction': 'receive' });
            put(c.networkIo, s.networkTxBytes, { ...a, 'network.io.direction': 'transmit' });
            put(c.diskIo, s.blockReadBytes, { ...a, 'disk.io.direction': 'read' });
            put(c.diskIo, s.blockWriteBytes, { ...a, 'disk.io.direction': 'write' });
            put(c.pids, s.pids, a);
          } else {
            put(h.cpuUtilization, pct(s.cpuPercent), a);
            put(h.load1, s.load1, a);
            put(h.memoryUsage, s.memoryBytes, { ...a, 'system.memory.state': 'used' });
            put(h.memoryLimit, s.memoryLimitBytes, a);
            put(h.memoryUtilization, pct(s.memoryPercent), { ...a, 'system.memory.state': 'used' });
            put(h.filesystemUsage, s.diskUsedBytes, { ...a, 'system.filesystem.state': 'used' });
            if (s.diskTotalBytes !== undefined && s.diskUsedBytes !== undefined)
              put(h.filesystemUsage, s.diskTotalBytes - s.diskUsedBytes, { ...a, 'system.filesystem.state': 'free' });
            put(h.filesystemLimit, s.diskTotalBytes, a);
            put(h.networkIo, s.networkRxBytes, { ...a, 'network.io.direction': 'receive' });
            put(h.networkIo, s.networkTxBytes, { ...a, 'network.io.direction': 'transmit' });
            put(h.diskIo, s.blockReadBytes, { ...a, 'disk.io.direction': 'read' });
            put(h.diskIo, s.blockWriteBytes, { ...a, 'disk.io.direction': 'write' });
            put(h.processCount, s.pids, a);
          }
        }
      },
      [...Object.values(c), ...Object.values(h)],
    );
  }

  /** Keeps the newest sample per container (and one for the host) for the next export. */
  record(samples: readonly ResourceSampleEvent[]): void {
    const now = Date.now();
    for (const s of samples) {
      const id = s.scope === 'host' ? 'host' : (s.container?.id ?? s.containerId);
      if (!id) {
        this.countDrop('metrics_unattributed', 1);
        continue;
      }
      if (!this.latest.has(id) && this.latest.size >= this.maxSeries) {
        this.countDrop('metrics_series', 1);
        continue;
      }
      this.latest.set(id, { sample: s, seenAt: now, attributes: s.scope === 'host' ? {} : containerAttributes(id, s) });
    }
  }

  countDrop(stage: DropStage, n: number, attributes: Attributes = {}, reason?: string): void {
    if (n <= 0) return;
    this.dropped[stage] += n;
    this.droppedCounter.add(n, { stage, ...attributes });
    if (stage === 'metrics_export')
      this.opts.log.warn('metric points not accepted by the endpoint, dropped', { points: n, ...(attributes as Record<string, string>), reason });
  }

  /** Exports what is there now; gives up (counted by the readers' exporters) after `timeoutMs`. */
  flush(timeoutMs = 5000): Promise<void> {
    return this.provider.forceFlush({ timeoutMillis: timeoutMs });
  }

  /** Last export, bounded: a dead endpoint must not hold up the agent's stop. */
  shutdown(timeoutMs = 5000): Promise<void> {
    return this.provider.shutdown({ timeoutMillis: timeoutMs });
  }
}

function pct(v: number | undefined): number | undefined {
  return v === undefined ? undefined : v / 100;
}

function containerAttributes(id: string, s: ResourceSampleEvent): Attributes {
  const ref = s.container;
  return { 'container.id': id, ...(ref && { 'container.name': ref.name, 'container.image.name': imageName(ref.image) }) };
}
