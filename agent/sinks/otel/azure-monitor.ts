import './no-statsbeat.js';
import { AzureMonitorMetricExporter, type AzureMonitorExporterOptions } from '@azure/monitor-opentelemetry-exporter';
import type { Resource } from '@opentelemetry/resources';
import type { RunwatchRecord } from '../../events/types.js';
import type { SendResult, SpoolDestination } from '../../pipeline/spool-drainer.js';
import { customEventEnvelope, interpretTrackResponse, parseRetryAfter, requestFailure, type AzureConnection } from './breeze.js';
import { toLogRecord } from './record-log.js';
import type { ExportBackend, WireOutcome } from './export-backend.js';

type PipelinePolicy = NonNullable<AzureMonitorExporterOptions['additionalPolicies']>[number]['policy'];

/**
 * Records go to Application Insights through our own POST of the exporter's envelopes, because only the HTTP
 * answer tells what was accepted: beta.42's export result says SUCCESS on a 503 (docs/export.md).
 */
export class AzureMonitorDestination implements SpoolDestination {
  readonly name = 'azure-monitor';
  private readonly url: string;

  constructor(private readonly opts: { connection: AzureConnection; resource: Resource; requestTimeoutMs: number }) {
    this.url = `${opts.connection.ingestionEndpoint}/v2.1/track`;
  }

  async send(records: readonly RunwatchRecord[], signal: AbortSignal): Promise<SendResult> {
    const { connection, resource, requestTimeoutMs } = this.opts;
    const body = JSON.stringify(records.map((r) => customEventEnvelope(toLogRecord(r, resource), connection.instrumentationKey)));
    let res: Response;
    try {
      res = await fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(requestTimeoutMs)]),
      });
    } catch (err) {
      return requestFailure(err);
    }
    let text = '';
    try {
      text = await res.text();
    } catch (err) {
      // The status line arrived; only a 200 is complete without its body.
      if (res.status !== 200) return { ...requestFailure(err), ambiguous: true };
    }
    return interpretTrackResponse(res.status, text, records.length, parseRetryAfter(res.headers.get('retry-after')));
  }

  async shutdown(): Promise<void> {}
}

/**
 * Watches the metric exporter's HTTP exchanges from inside its pipeline (a per-call policy sees the final answer
 * after the client's own retries), so dropped metric points are counted even when the exporter says SUCCESS.
 */
class TrackWireObserver implements WireOutcome {
  private last: { status: number; body: string } | undefined;
  readonly policy: PipelinePolicy;

  constructor(requestTimeoutMs: number) {
    this.policy = {
      name: 'runwatchTrackWireObserver',
      sendRequest: async (request, next) => {
        if (!request.timeout) request.timeout = requestTimeoutMs;
        try {
          const response = await next(request);
          this.last = { status: response.status, body: response.bodyAsText ?? '' };
          return response;
        } catch (err) {
          this.last = { status: (err as { statusCode?: number }).statusCode ?? 0, body: '' };
          throw err;
        }
      },
    };
  }

  begin(): void {
    this.last = undefined;
  }

  accepted(points: number): number | undefined {
    if (!this.last) return undefined;
    const result = interpretTrackResponse(this.last.status, this.last.body, points);
    return result.kind === 'items' ? result.outcomes.filter((o) => o === 'accepted').length : 0;
  }
}

/** Azure Monitor: custom events through our sender, metrics through the exporter's own metric path. */
export function azureMonitorBackend(opts: { connection: AzureConnection; resource: Resource; requestTimeoutMs: number }): ExportBackend {
  const { connection, requestTimeoutMs } = opts;
  const wire = new TrackWireObserver(requestTimeoutMs);
  const metricExporter = new AzureMonitorMetricExporter({
    connectionString: `InstrumentationKey=${connection.instrumentationKey};IngestionEndpoint=${connection.ingestionEndpoint}`,
    // Its offline storage loses data and reports success; metric points are allowed to drop (and get counted).
    disableOfflineStorage: true,
    additionalPolicies: [{ policy: wire.policy, position: 'perCall' }],
    // The exporter upgrades http:// endpoints to https; a loopback relay needs host + allowInsecureConnection.
    ...(connection.insecureLoopback && { host: connection.ingestionEndpoint, allowInsecureConnection: true }),
  });
  return { name: 'azure-monitor', records: new AzureMonitorDestination(opts), metrics: { exporter: metricExporter, wire } };
}
