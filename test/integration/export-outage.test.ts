import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import type { RunwatchRecord } from '../../agent/events/types.js';
import { dockerExec, runContainer } from '../helpers/docker.js';
import { installLoopbackGuard, IngestionReceiver, otlpLogRecords, startExportAgent, type ExportAgent } from '../helpers/ingestion-receiver.js';
import { waitFor } from '../helpers/test-agent.js';

const guard = installLoopbackGuard();
afterAll(() => {
  guard.restore();
  expect(guard.violations).toEqual([]);
});

/** Records from both sources: real `docker exec` audit records and the agent's own notices. */
async function produce(t: ExportAgent, containerId: string, phase: string, notices: number): Promise<void> {
  await dockerExec(containerId, ['echo', phase]);
  for (let i = 0; i < notices; i++) t.agent.notice('test.outage', 'info', `record ${i} produced while ${phase}`, { phase, i });
  await waitFor(
    () => t.memory.records.some((r) => r.docker?.command === `echo ${phase}`) && t.memory.records.filter((r) => r.details?.phase === phase).length === notices,
    20_000,
    () => `records of phase ${phase}`,
  );
}

const duplicated = (ids: string[]) => {
  const seen = new Set<string>();
  return new Set(ids.filter((id) => (seen.has(id) ? true : (seen.add(id), false))));
};

describe('delivery guarantee across an outage and an agent restart (real agent, real Docker)', () => {
  it('delivers every record once the endpoint is back after 503s, refused connections, a restart and timeouts; duplicates counted and reported', async () => {
    const receiver = await IngestionReceiver.start();
    onTestFinished(() => receiver.stop());
    const stateDir = mkdtempSync(path.join(tmpdir(), 'rw-outage-'));
    onTestFinished(() => rmSync(stateDir, { recursive: true, force: true }));
    const cid = await runContainer({ cmd: ['sleep', '300'] });
    const produced: RunwatchRecord[] = [];

    // 1. Healthy.
    const first = await startExportAgent({ stateDir, receiver, otlp: true });
    onTestFinished(() => first.stop());
    await produce(first, cid, 'healthy', 20);
    await waitFor(
      () => first.memory.records.every((r) => receiver.acceptedIds().includes(r.id)),
      20_000,
      () => JSON.stringify(first.otelStats()),
    );

    // 2. The endpoint answers 503.
    receiver.mode = { kind: 'status', status: 503 };
    await produce(first, cid, '503', 20);
    await waitFor(
      () => Number(first.otelStats()['azure-monitor.failedRequests']) >= 2,
      20_000,
      () => JSON.stringify(first.otelStats()),
    );
    expect(first.otelStats()['azure-monitor.lastError']).toMatch(/503/);

    // 3. It refuses connections.
    await receiver.refuse();
    await produce(first, cid, 'refused', 20);
    await waitFor(
      () =>
        String(first.otelStats()['azure-monitor.lastError']).includes('ECONNREFUSED') && String(first.otelStats()['otlp.lastError']).includes('ECONNREFUSED'),
      20_000,
      () => JSON.stringify(first.otelStats()),
    );

    // 4. The agent restarts during the outage: a new agent over the same state directory.
    await first.stop();
    produced.push(...first.memory.records);
    const second = await startExportAgent({ stateDir, receiver, otlp: true });
    onTestFinished(() => second.stop());
    expect(second.otelStats()['spoolBytes']).toBeGreaterThan(0);
    await produce(second, cid, 'restarted', 20);

    // 5. The endpoint takes requests but never answers: every one times out.
    receiver.mode = { kind: 'hang' };
    await receiver.resume();
    await waitFor(
      () => String(second.otelStats()['azure-monitor.lastError']).includes('TimeoutError'),
      20_000,
      () => JSON.stringify(second.otelStats()),
    );

    // 6. Back to normal.
    receiver.mode = { kind: 'accept' };
    const expectedIds = () => [...produced, ...second.memory.records].map((r) => r.id);
    const missing = () => expectedIds().filter((id) => !receiver.acceptedIds().includes(id));
    await waitFor(
      () =>
        receiver.events('RunwatchAudit').some((e) => e.data.baseData.properties?.rule === 'runwatch.export_duplicates') &&
        missing().length === 0 &&
        Number(second.otelStats()['azure-monitor.backlogBytes']) === 0 &&
        Number(second.otelStats()['otlp.backlogBytes']) === 0,
      60_000,
      () => `${missing().length} records still missing; ${JSON.stringify(second.otelStats())}`,
    );
    await second.stop();
    produced.push(...second.memory.records);

    // Every record produced reached the endpoint, and nothing else did.
    const allIds = new Set(produced.map((r) => r.id));
    expect(allIds.size).toBeGreaterThanOrEqual(4 * 20 + 4); // 4 phases × 20 notices, and at least one exec record each
    expect(new Set(receiver.acceptedIds())).toEqual(allIds);
    const otlpIds = otlpLogRecords(receiver).map((l) => String(l.attributes.id));
    expect(new Set(otlpIds)).toEqual(allIds);

    // Duplicates came only from the unanswered requests, and runwatch counted each duplicated record.
    const azureDupes = duplicated(receiver.acceptedIds());
    expect(azureDupes.size).toBeGreaterThan(0);
    expect(second.otelStats()['azure-monitor.possibleDuplicates']).toBe(azureDupes.size);
    expect(second.otelStats()['otlp.possibleDuplicates']).toBe(duplicated(otlpIds).size);
    const reports = produced.filter((r) => r.rule === 'runwatch.export_duplicates');
    const reported = (dest: string) => reports.filter((r) => r.details?.destination === dest).reduce((n, r) => n + Number(r.details?.records), 0);
    expect(reported('azure-monitor')).toBe(azureDupes.size);
    expect(reported('otlp')).toBe(duplicated(otlpIds).size);
    // Nothing was evicted or rejected on the way.
    expect(second.otelStats()['azure-monitor.evicted']).toBe(0);
    expect(second.otelStats()['azure-monitor.rejected']).toBe(0);
  });
});
