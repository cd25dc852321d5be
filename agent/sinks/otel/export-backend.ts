import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { AggregationTemporality, InstrumentType, PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { SpoolDestination } from '../../pipeline/spool-drainer.js';

/** Reads the HTTP answer of the exporter's last request, where the exporter's own result cannot be trusted. */
export interface WireOutcome {
  begin(): void;
  /** How many of the `points` sent the endpoint accepted; undefined when no request was seen. */
  accepted(points: number): number | undefined;
}

/**
 * One export target. Azure Monitor and OTLP differ only in the factory that builds this: a destination for
 * spooled records and a metric exporter for the one MeterProvider.
 */
export interface ExportBackend {
  readonly name: string;
  records: SpoolDestination;
  metrics: { exporter: PushMetricExporter; wire?: WireOutcome };
}

function countPoints(metrics: ResourceMetrics): number {
  let n = 0;
  for (const scope of metrics.scopeMetrics) for (const m of scope.metrics) n += m.dataPoints.length;
  return n;
}

/** Wraps a metric exporter to count the points that did not reach the endpoint (metric samples may drop, never silently). */
export class CountingMetricExporter implements PushMetricExporter {
  readonly selectAggregationTemporality?: (instrumentType: InstrumentType) => AggregationTemporality;

  constructor(
    private readonly inner: PushMetricExporter,
    private readonly onDropped: (points: number, reason: string) => void,
    private readonly wire?: WireOutcome,
  ) {
    if (inner.selectAggregationTemporality) this.selectAggregationTemporality = inner.selectAggregationTemporality.bind(inner);
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    const points = countPoints(metrics);
    this.wire?.begin();
    this.inner.export(metrics, (result) => {
      // What the wire saw wins over the exporter's verdict (beta.42 says SUCCESS on a 503, FAILED on a 206 with a 400 item).
      const accepted = this.wire?.accepted(points) ?? (result.code === ExportResultCode.SUCCESS ? points : 0);
      if (accepted < points) this.onDropped(points - accepted, result.error?.message ?? 'not accepted by the endpoint');
      resultCallback(result);
    });
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
}
