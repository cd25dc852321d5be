import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { auditOnlyDecider } from '../../agent/engine/audit-decider.js';
import type { ResourceSampleEvent } from '../../agent/events/types.js';
import { dockerExec, runContainer } from '../helpers/docker.js';
import { installLoopbackGuard, IngestionReceiver, otlpLogRecords, otlpMetricPoints, startExportAgent } from '../helpers/ingestion-receiver.js';
import { waitFor } from '../helpers/test-agent.js';

const guard = installLoopbackGuard();
let receiver: IngestionReceiver;

beforeAll(async () => {
  receiver = await IngestionReceiver.start();
});
afterAll(async () => {
  await receiver.stop();
  guard.restore();
  expect(guard.violations).toEqual([]);
});

function stateDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rw-export-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('export to Azure Monitor and OTLP (real agent, real Docker, local ingestion endpoint)', () => {
  it('sends an alert and the docker exec audit trail as RunwatchAlert / RunwatchAudit custom events with flattened properties', async () => {
    const t = await startExportAgent({ stateDir: stateDir(), receiver, otlp: true });
    onTestFinished(() => t.stop());
    // An alert about the same real event, as a profile violation would raise it.
    t.agent.setDecider({
      decide: (ev, ctx) => [
        ...auditOnlyDecider.decide(ev, ctx),
        ...(ev.kind === 'docker_action' && ev.action === 'exec_start'
          ? [
              {
                kind: 'alert' as const,
                rule: 'Unexpected Exec',
                severity: 'high' as const,
                message: `Detect exec in ${ev.container?.name}`,
                decidedBy: 'docker.allowExec',
                details: { command: ev.command ?? '' },
              },
            ]
          : []),
      ],
    });
    const id = await runContainer({ cmd: ['sleep', '300'] });
    await dockerExec(id, ['cat', '/etc/hostname']);
    const name = (ev: { data: { baseData: { properties?: Record<string, string> } } }) => ev.data.baseData.properties ?? {};
    const alert = await waitFor(
      () => receiver.events('RunwatchAlert').find((e) => name(e)['container.id'] === id),
      20_000,
      () => `RunwatchAlert for ${id}`,
    );
    const audit = await waitFor(
      () => receiver.events('RunwatchAudit').find((e) => name(e)['container.id'] === id && name(e)['docker.action'] === 'exec_start'),
      20_000,
      () => 'RunwatchAudit exec_start',
    );

    expect(alert.name).toBe('Microsoft.ApplicationInsights.Event');
    expect(alert.tags).toMatchObject({ 'ai.cloud.role': 'runwatch', 'ai.cloud.roleInstance': 'export-test' });
    expect(name(alert)).toMatchObject({
      rule: 'Unexpected Exec',
      severity: 'high',
      'container.image': 'runwatch-test/busybox:1',
      decidedBy: 'docker.allowExec',
      'details.command': 'cat /etc/hostname',
    });
    expect(name(alert)['container.name']).toMatch(/\S/);
    expect(name(audit)).toMatchObject({
      rule: 'audit.exec',
      severity: 'medium',
      'docker.command': 'cat /etc/hostname',
      'container.image': 'runwatch-test/busybox:1',
    });
    expect(name(audit)['container.imageId']).toMatch(/^sha256:[0-9a-f]{64}$/);
    // Same record, same id, on both outputs.
    const recordId = name(audit).id;
    const otlp = await waitFor(
      () => otlpLogRecords(receiver).find((l) => l.attributes.id === recordId),
      20_000,
      () => 'the OTLP copy of the audit record',
    );
    expect(otlp).toMatchObject({ eventName: 'RunwatchAudit', attributes: expect.objectContaining({ 'container.id': id, 'docker.action': 'exec_start' }) });
    expect(t.memory.records.some((r) => r.id === recordId)).toBe(true);
  });

  it('exports resource samples of a real container as container.* metrics with container.id/name/image.name', async () => {
    const t = await startExportAgent({ stateDir: stateDir(), receiver, otlp: true, overrides: { metrics: { enabled: true, intervalSeconds: 1 } } });
    onTestFinished(() => t.stop());
    const id = await runContainer({ cmd: ['sleep', '300'] });
    await waitFor(
      () => t.agent.inventory.get(id),
      20_000,
      () => `container ${id} in the inventory`,
    );
    // The pipeline enriches the sample with the inventory's context, exactly as for the resources sensor's samples.
    const sample: ResourceSampleEvent = {
      kind: 'resource_sample',
      ts: Date.now(),
      scope: 'container',
      containerId: id,
      cpuCores: 0.5,
      cpuPercent: 50,
      memoryBytes: 1234567,
      memoryLimitBytes: 0,
      networkRxBytes: 10,
      networkTxBytes: 20,
      blockReadBytes: 30,
      blockWriteBytes: 40,
      pids: 1,
    };
    const push = setInterval(() => t.agent.queue.push({ ...sample, ts: Date.now() }), 200);
    onTestFinished(() => clearInterval(push));
    const props = (e: { data: { baseData: { properties?: Record<string, string> } } }) => e.data.baseData.properties ?? {};
    const metricNames = () =>
      new Set(
        receiver
          .metrics()
          .filter((e) => props(e)['container.id'] === id)
          .map((e) => e.data.baseData.metrics?.[0].name),
      );
    await waitFor(
      () => ['container.cpu.usage', 'container.memory.usage', 'container.network.io', 'container.disk.io'].every((n) => metricNames().has(n)),
      20_000,
      () => [...metricNames()].join(', '),
    );
    const cpu = receiver.metrics().find((e) => props(e)['container.id'] === id && e.data.baseData.metrics?.[0].name === 'container.cpu.usage')!;
    expect(cpu.name).toBe('Microsoft.ApplicationInsights.Metric');
    expect(props(cpu)).toMatchObject({ 'container.image.name': 'runwatch-test/busybox' });
    expect(props(cpu)['container.name']).toMatch(/\S/);
    await waitFor(
      () => otlpMetricPoints(receiver).find((p) => p.name === 'container.memory.usage' && p.attributes['container.id'] === id),
      20_000,
      () => 'OTLP container.memory.usage',
    );
  });
});
