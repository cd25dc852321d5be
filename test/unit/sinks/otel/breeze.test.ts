import '../../../../agent/sinks/otel/no-statsbeat.js';
import { AzureMonitorLogExporter } from '@azure/monitor-opentelemetry-exporter';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customEventEnvelope, interpretTrackResponse, parseConnectionString, parseRetryAfter, requestFailure } from '../../../../agent/sinks/otel/breeze.js';
import { runwatchResource } from '../../../../agent/sinks/otel/otel-resource.js';
import { toLogRecord } from '../../../../agent/sinks/otel/record-log.js';
import { RunwatchError } from '../../../../agent/errors.js';
import { installLoopbackGuard, IngestionReceiver } from '../../../helpers/ingestion-receiver.js';
import { alertRecord, auditRecord } from '../../../fixtures/records.js';

const guard = installLoopbackGuard();
const KEY = '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0';
let receiver: IngestionReceiver;

beforeAll(async () => {
  receiver = await IngestionReceiver.start();
});
afterAll(async () => {
  await receiver.stop();
  guard.restore();
  expect(guard.violations).toEqual([]);
});

describe('custom-event envelope', () => {
  it('is, field by field, what the real AzureMonitorLogExporter sends for the same log records', async () => {
    const resource = runwatchResource('node-1');
    const records = [alertRecord(1), auditRecord(2), alertRecord(3, { message: '€'.repeat(3000), details: { long: 'x'.repeat(9000) } })];
    const logs = records.map((r) => toLogRecord(r, resource));
    const exporter = new AzureMonitorLogExporter({
      connectionString: `InstrumentationKey=${KEY}`,
      host: receiver.url,
      allowInsecureConnection: true,
      disableOfflineStorage: true,
    });
    const result = await new Promise<{ code: number }>((resolve) => exporter.export(logs, resolve));
    await exporter.shutdown();
    expect(result.code).toBe(0);
    const sentByExporter = receiver.requests.at(-1)!.envelopes;
    const ours = JSON.parse(JSON.stringify(logs.map((l) => customEventEnvelope(l, KEY))));
    expect(ours).toEqual(sentByExporter);
    // And it carries what a SOC analyst queries.
    const props = ours[0].data.baseData.properties;
    expect(ours.map((e: { data: { baseData: { name: string } } }) => e.data.baseData.name)).toEqual(['RunwatchAlert', 'RunwatchAudit', 'RunwatchAlert']);
    expect(props).toMatchObject({
      rule: 'Unexpected Process',
      severity: 'high',
      'container.id': 'c'.repeat(64),
      'container.image': 'acr.example.io/web:1',
      'process.exe': '/usr/bin/nc',
      'process.pid': '4242',
      'details.port': '4444',
    });
    expect(ours[1].data.baseData.properties).toMatchObject({ 'docker.action': 'exec_create', 'docker.hostUser.user': 'alice' });
    expect(Buffer.byteLength(ours[2].data.baseData.properties['details.long'])).toBe(8192);
    expect(ours[0].tags['ai.cloud.roleInstance']).toBe('node-1');
  });
});

describe('parseConnectionString', () => {
  it('reads key and endpoint like the exporter, upgrading http to https unless a loopback relay is allowed', () => {
    expect(
      parseConnectionString(`InstrumentationKey=${KEY};IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;LiveEndpoint=https://x/`, {
        allowHttpLoopback: false,
      }),
    ).toEqual({
      instrumentationKey: KEY,
      ingestionEndpoint: 'https://westeurope-5.in.applicationinsights.azure.com',
      insecureLoopback: false,
    });
    expect(
      parseConnectionString(`instrumentationkey=${KEY};EndpointSuffix=applicationinsights.azure.cn;Location=chinaeast2`, { allowHttpLoopback: false })
        .ingestionEndpoint,
    ).toBe('https://chinaeast2.dc.applicationinsights.azure.cn');
    expect(parseConnectionString(`InstrumentationKey=${KEY}`, { allowHttpLoopback: false }).ingestionEndpoint).toBe('https://dc.services.visualstudio.com');
    expect(parseConnectionString(`InstrumentationKey=${KEY};IngestionEndpoint=http://ingest.example.com`, { allowHttpLoopback: true }).ingestionEndpoint).toBe(
      'https://ingest.example.com',
    );
    expect(parseConnectionString(`InstrumentationKey=${KEY};IngestionEndpoint=http://127.0.0.1:9/`, { allowHttpLoopback: false }).ingestionEndpoint).toBe(
      'https://127.0.0.1:9',
    );
    expect(parseConnectionString(`InstrumentationKey=${KEY};IngestionEndpoint=http://127.0.0.1:9/`, { allowHttpLoopback: true })).toMatchObject({
      ingestionEndpoint: 'http://127.0.0.1:9',
      insecureLoopback: true,
    });
  });

  it('rejects a bad string with a located error that does not contain it', () => {
    const bad = [
      `InstrumentationKey=${KEY.toUpperCase()}`,
      'IngestionEndpoint=https://x',
      `InstrumentationKey=${KEY};garbage`,
      `InstrumentationKey=${KEY};IngestionEndpoint=ftp://x`,
    ];
    for (const text of bad) {
      let caught: unknown;
      try {
        parseConnectionString(text, { allowHttpLoopback: false, where: { file: '/etc/runwatch.yaml', field: 'outputs.azureMonitor.connectionString' } });
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(RunwatchError);
      const e = caught as RunwatchError;
      expect(e.code).toBe('RW_CONFIG_INVALID');
      expect(e.format()).toContain('/etc/runwatch.yaml: outputs.azureMonitor.connectionString:');
      expect(e.format()).not.toContain(KEY.slice(0, 8));
      expect(e.format().toLowerCase()).not.toContain(KEY.slice(0, 8));
    }
  });
});

describe('interpretTrackResponse', () => {
  const body = (received: number, errors: { index: number; statusCode: number; message?: string }[]) =>
    JSON.stringify({ itemsReceived: received, itemsAccepted: received - errors.length, errors });

  it('accepts everything on 200', () => {
    expect(interpretTrackResponse(200, '', 3)).toMatchObject({ kind: 'items', outcomes: ['accepted', 'accepted', 'accepted'] });
  });

  it('on 206 retries only items that failed with a transient status', () => {
    const r = interpretTrackResponse(
      206,
      body(7, [
        { index: 1, statusCode: 500 },
        { index: 2, statusCode: 400 },
        { index: 3, statusCode: 429 },
        { index: 4, statusCode: 439 },
        { index: 5, statusCode: 503, message: 'Telemetry sampled out.' },
        { index: 6, statusCode: 408 },
      ]),
      7,
    );
    expect(r).toMatchObject({ kind: 'items', outcomes: ['accepted', 'retry', 'rejected', 'retry', 'rejected', 'rejected', 'retry'] });
  });

  it('reads per-item errors of a 4xx/5xx answer that accounts for every item', () => {
    expect(
      interpretTrackResponse(
        400,
        body(2, [
          { index: 0, statusCode: 400 },
          { index: 1, statusCode: 400 },
        ]),
        2,
      ),
    ).toMatchObject({ outcomes: ['rejected', 'rejected'] });
    expect(
      interpretTrackResponse(
        503,
        body(2, [
          { index: 0, statusCode: 503 },
          { index: 1, statusCode: 503 },
        ]),
        2,
      ),
    ).toMatchObject({ outcomes: ['retry', 'retry'] });
  });

  it('decides for the whole request when the body does not account for the items', () => {
    expect(interpretTrackResponse(503, '', 2)).toMatchObject({ kind: 'failed', retriable: true, ambiguous: false });
    expect(interpretTrackResponse(503, body(5, []), 2)).toMatchObject({ kind: 'failed', retriable: true });
    expect(interpretTrackResponse(401, '', 2)).toMatchObject({ kind: 'failed', retriable: true });
    expect(interpretTrackResponse(404, '', 2)).toMatchObject({ kind: 'failed', retriable: false });
    expect(interpretTrackResponse(400, 'bad', 2)).toMatchObject({ kind: 'failed', retriable: false });
    expect(interpretTrackResponse(206, 'not json', 2)).toMatchObject({ kind: 'failed', retriable: true, ambiguous: true });
  });

  it('honours Retry-After', () => {
    expect(interpretTrackResponse(429, '', 1, parseRetryAfter('7'))).toMatchObject({ retryAfterMs: 7000 });
    expect(parseRetryAfter(new Date(Date.now() + 60_000).toUTCString())).toBeGreaterThan(50_000);
    expect(parseRetryAfter(null)).toBeUndefined();
  });
});

describe('requestFailure', () => {
  it('tells a request that never left (no duplicate possible) from one that may have arrived', () => {
    expect(requestFailure(Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } }))).toMatchObject({
      retriable: true,
      ambiguous: false,
    });
    expect(requestFailure(new DOMException('The operation was aborted due to timeout', 'TimeoutError'))).toEqual({
      kind: 'failed',
      retriable: true,
      ambiguous: true,
      error: 'request failed: TimeoutError',
    });
    expect(requestFailure(Object.assign(new TypeError('fetch failed'), { cause: { code: 'UND_ERR_SOCKET' } }))).toMatchObject({
      retriable: true,
      ambiguous: true,
    });
  });
});
