import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseConfig, type Config } from '../../../../agent/config/load.js';
import { redactValue } from '../../../../agent/config/redact.js';
import { errorMessage } from '../../../../agent/errors.js';
import type { ResourceSampleEvent } from '../../../../agent/events/types.js';
import { createLogger } from '../../../../agent/log.js';
import { createSinks } from '../../../../agent/sinks/index.js';
import { OtelSink } from '../../../../agent/sinks/otel/otel-sink.js';
import { deepMerge, waitFor } from '../../../helpers/test-agent.js';
import { installLoopbackGuard, IngestionReceiver, otlpLogRecords, otlpMetricPoints } from '../../../helpers/ingestion-receiver.js';
import { alertRecord, auditRecord } from '../../../fixtures/records.js';

const guard = installLoopbackGuard();
let receiver: IngestionReceiver;
const dirs: string[] = [];

beforeAll(async () => {
  receiver = await IngestionReceiver.start();
});
afterEach(() => {
  receiver.mode = { kind: 'accept' };
});
afterAll(async () => {
  await receiver.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  guard.restore();
  expect(guard.violations).toEqual([]);
});

function config(over: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = {}): Config {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'rw-otel-'));
  dirs.push(stateDir);
  const base = {
    stateDir,
    host: 'node-1',
    outputs: {
      stdout: { enabled: false },
      jsonl: { path: '' },
      azureMonitor: { connectionString: receiver.connectionString(), allowHttpLoopback: true },
      otlp: { endpoint: receiver.url },
      spool: { retryInitialMs: 20, retryMaxMs: 100, requestTimeoutMs: 2000 },
    },
    metrics: { intervalSeconds: 3600 },
  };
  return parseConfig(JSON.stringify(deepMerge(base, over)), path.join(stateDir, 'config.yaml'), { env });
}

const CID = 'c'.repeat(64);
const samples = (): ResourceSampleEvent[] => [
  {
    kind: 'resource_sample',
    ts: Date.now(),
    scope: 'container',
    containerId: CID,
    container: { id: CID, name: 'web', image: 'acr.example.io/web:1', imageId: 'sha256:x' },
    cpuCores: 0.25,
    cpuPercent: 25,
    memoryBytes: 50e6,
    memoryLimitBytes: 100e6,
    memoryPercent: 50,
    networkRxBytes: 1000,
    networkTxBytes: 2000,
    blockReadBytes: 4096,
    blockWriteBytes: 8192,
    pids: 7,
  },
  {
    kind: 'resource_sample',
    ts: Date.now(),
    scope: 'host',
    cpuPercent: 10,
    memoryBytes: 1e9,
    memoryLimitBytes: 4e9,
    memoryPercent: 25,
    load1: 0.5,
    diskUsedBytes: 10e9,
    diskTotalBytes: 40e9,
    networkRxBytes: 5,
    networkTxBytes: 6,
  },
];

describe('OtelSink', () => {
  it('delivers alerts and audit records as custom events to Azure Monitor and as log records over OTLP', async () => {
    const sink = new OtelSink({ config: config(), log: createLogger({ write: () => {} }), notify: () => {} });
    expect(sink.name).toBe('otel:azure-monitor+otlp');
    expect(await sink.deliver([alertRecord(1), auditRecord(2)])).toEqual({ ok: true });
    await waitFor(
      () => receiver.events().length >= 2 && otlpLogRecords(receiver).length >= 2,
      10_000,
      () => JSON.stringify(sink.stats()),
    );
    await sink.shutdown();

    const alert = receiver.events('RunwatchAlert').find((e) => e.data.baseData.properties?.id === alertRecord(1).id)!;
    expect(alert.name).toBe('Microsoft.ApplicationInsights.Event');
    expect(alert.iKey).toBe('00000000-0000-4000-8000-000000000001');
    expect(alert.tags).toMatchObject({ 'ai.cloud.role': 'runwatch', 'ai.cloud.roleInstance': 'node-1' });
    expect(alert.data.baseData.properties).toMatchObject({
      rule: 'Unexpected Process',
      severity: 'high',
      'container.id': CID,
      'container.image': 'acr.example.io/web:1',
      'process.exe': '/usr/bin/nc',
    });
    const audit = receiver.events('RunwatchAudit').find((e) => e.data.baseData.properties?.id === auditRecord(2).id)!;
    expect(audit.data.baseData.properties).toMatchObject({ rule: 'docker.exec', 'docker.action': 'exec_create', 'docker.hostUser.user': 'alice' });

    const logs = otlpLogRecords(receiver);
    const otlpAlert = logs.find((l) => l.attributes.id === alertRecord(1).id)!;
    expect(otlpAlert).toMatchObject({ eventName: 'RunwatchAlert', severityText: 'HIGH', body: alertRecord(1).message });
    expect(otlpAlert.attributes).toMatchObject({
      'microsoft.custom_event.name': 'RunwatchAlert',
      'process.pid': 4242,
      'process.args': ['nc', '-l', '-p', '4444'],
      'container.name': 'web',
    });
  });

  it('exports resource samples as semantic-convention metrics with container attributes, and counts points not accepted', async () => {
    const sink = new OtelSink({ config: config(), log: createLogger({ write: () => {} }), notify: () => {} });
    sink.recordMetrics(samples());
    const before = receiver.metrics().length;
    await sink.flush();
    const azure = receiver.metrics().slice(before);
    const byName = (n: string) => azure.filter((e) => e.data.baseData.metrics?.[0].name === n);
    expect(byName('container.cpu.usage')[0].data.baseData).toMatchObject({
      metrics: [{ name: 'container.cpu.usage', value: 0.25 }],
      properties: { 'container.id': CID, 'container.name': 'web', 'container.image.name': 'acr.example.io/web' },
    });
    expect(byName('container.memory.usage')[0].data.baseData.metrics?.[0].value).toBe(50e6);
    expect(
      byName('container.network.io')
        .map((e) => e.data.baseData.properties?.['network.io.direction'])
        .sort(),
    ).toEqual(['receive', 'transmit']);
    expect(byName('container.disk.io')).toHaveLength(2);
    for (const n of [
      'container.memory.limit',
      'container.pids.count',
      'system.cpu.utilization',
      'system.memory.usage',
      'system.filesystem.usage',
      'system.network.io',
      'system.cpu.load_average.1m',
    ])
      expect(byName(n).length, n).toBeGreaterThan(0);
    const otlpNames = new Set(otlpMetricPoints(receiver).map((p) => p.name));
    expect(otlpNames).toContain('container.cpu.usage');
    expect(otlpMetricPoints(receiver).find((p) => p.name === 'container.memory.usage')?.attributes).toMatchObject({
      'container.id': CID,
      'container.image.name': 'acr.example.io/web',
    });

    // Partial success on the metric path: the points the endpoint refused are counted as dropped.
    receiver.mode = { kind: 'partial', itemStatus: (e) => (e.data.baseData.metrics?.[0].name === 'container.pids.count' ? 400 : undefined) };
    await sink.flush();
    expect(sink.stats()['dropped.metrics_export']).toBe(1);
    await sink.shutdown();
  });

  it('is created by createSinks when a connection string or an OTLP endpoint is configured, and not otherwise', async () => {
    const log = createLogger({ write: () => {} });
    const sinks = createSinks({ config: config({ outputs: { otlp: { endpoint: '' } } }), log, notify: () => {} });
    expect(sinks.map((s) => s.name)).toEqual(['otel:azure-monitor']);
    await Promise.all(sinks.map((s) => s.shutdown()));
    expect(createSinks({ config: config({ outputs: { azureMonitor: { connectionString: '' }, otlp: { endpoint: '' } } }), log, notify: () => {} })).toEqual([]);
  });

  it('turns statsbeat off before the Azure exporter loads, unless the operator set it', async () => {
    vi.resetModules();
    delete process.env.APPLICATION_INSIGHTS_NO_STATSBEAT;
    await import('../../../../agent/sinks/otel/azure-monitor.js');
    expect(process.env.APPLICATION_INSIGHTS_NO_STATSBEAT).toBe('1');
    vi.resetModules();
    process.env.APPLICATION_INSIGHTS_NO_STATSBEAT = 'yes';
    await import('../../../../agent/sinks/otel/azure-monitor.js');
    expect(process.env.APPLICATION_INSIGHTS_NO_STATSBEAT).toBe('yes');
    process.env.APPLICATION_INSIGHTS_NO_STATSBEAT = '1';
  });
});

describe('the connection string never leaks', () => {
  it('is absent from logs, errors, stats and config dumps, even while the endpoint fails', async () => {
    const key = '5ec2e7a1-0b1d-4c0e-9f3a-7d6c5b4a3921';
    const secret = `InstrumentationKey=${key};IngestionEndpoint=${receiver.url}/;LiveEndpoint=https://live.example/;ApplicationId=abc123`;
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', write: (l) => lines.push(l) });
    const cfg = config({ outputs: { azureMonitor: { connectionString: '${APPINSIGHTS_TEST_CS}' }, otlp: { endpoint: '' } } }, { APPINSIGHTS_TEST_CS: secret });
    expect(cfg.outputs.azureMonitor.connectionString).toBe(secret);
    receiver.mode = { kind: 'status', status: 503 };
    const sink = new OtelSink({
      config: cfg,
      log,
      notify: (rule, message, details) => log.warn('notice', { rule, message, details: JSON.stringify(details) }),
    });
    await sink.deliver([alertRecord(50)]);
    await waitFor(
      () => Number(sink.stats()['azure-monitor.requests']) >= 2,
      10_000,
      () => JSON.stringify(sink.stats()),
    );
    log.error('debugging aid gone wrong', { cs: secret, key });
    const dump = JSON.stringify(redactValue(cfg));
    const stats = JSON.stringify(sink.stats());
    await sink.shutdown();

    const errors: string[] = [];
    for (const bad of [`InstrumentationKey=${key.toUpperCase()}`, `InstrumentationKey=${key};IngestionEndpoint=ftp://h`]) {
      try {
        new OtelSink({ config: config({ outputs: { azureMonitor: { connectionString: bad } } }), log, notify: () => {} });
      } catch (err) {
        errors.push(errorMessage(err), String(err), JSON.stringify(err));
      }
    }
    expect(errors).toHaveLength(6);
    expect(lines.length).toBeGreaterThan(1);
    for (const text of [...lines, dump, stats, ...errors]) {
      expect(text.toLowerCase()).not.toContain(key.slice(0, 8));
      expect(text).not.toContain('abc123');
    }
    expect(lines.join('')).toContain('***');
  });
});
