import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { installLoopbackGuard, IngestionReceiver, startExportAgent } from '../helpers/ingestion-receiver.js';
import { waitFor } from '../helpers/test-agent.js';

const guard = installLoopbackGuard();
afterAll(() => {
  guard.restore();
  expect(guard.violations).toEqual([]);
});

const spoolBytes = (dir: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.seg'))
    .reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);

describe('spool bound (real agent)', () => {
  it('past outputs.spool.maxBytes evicts the oldest records, counts them exactly and reports it as an audit record', async () => {
    const receiver = await IngestionReceiver.start();
    onTestFinished(() => receiver.stop());
    await receiver.refuse();
    const stateDir = mkdtempSync(path.join(tmpdir(), 'rw-bound-'));
    onTestFinished(() => rmSync(stateDir, { recursive: true, force: true }));
    const maxBytes = 48 * 1024;
    // Docker sensor off: other tests' containers on the shared engine must not add records to the count.
    const t = await startExportAgent({ stateDir, receiver, overrides: { outputs: { spool: { maxBytes } }, sensors: { docker: { enabled: false } } } });
    onTestFinished(() => t.stop());

    // About 400 bytes each: several times the bound while the endpoint is down.
    for (let i = 0; i < 600; i++) {
      t.agent.notice('test.bound', 'info', `record ${i} while the endpoint is down`, { i, pad: 'x'.repeat(100) });
      if (i % 50 === 49) {
        await waitFor(
          () => t.memory.records.filter((r) => r.rule === 'test.bound').length === i + 1,
          20_000,
          () => 'records through the pipeline',
        );
        expect(spoolBytes(path.join(stateDir, 'spool'))).toBeLessThanOrEqual(maxBytes);
      }
    }
    await waitFor(
      () => t.memory.records.some((r) => r.rule === 'runwatch.spool_evicted'),
      20_000,
      () => 'an eviction notice',
    );
    expect(Number(t.otelStats()['azure-monitor.evicted'])).toBeGreaterThan(0);

    await receiver.resume();
    const produced = () => t.memory.records.length;
    await waitFor(
      () => Number(t.otelStats()['azure-monitor.backlogBytes']) === 0 && Number(t.otelStats()['spool.appended']) === produced(),
      30_000,
      () => JSON.stringify(t.otelStats()),
    );
    await t.stop();

    const producedIds = t.memory.records.map((r) => r.id);
    const delivered = new Set(receiver.acceptedIds());
    const lost = producedIds.filter((id) => !delivered.has(id));
    expect([...delivered].every((id) => producedIds.includes(id))).toBe(true);
    const notices = t.memory.records.filter((r) => r.rule === 'runwatch.spool_evicted');
    // Exact: what the notices and the counter say was evicted is what never arrived.
    expect(lost.length).toBeGreaterThan(0);
    expect(notices.reduce((n, r) => n + Number(r.details?.records), 0)).toBe(lost.length);
    expect(t.otelStats()['azure-monitor.evicted']).toBe(lost.length);
    // Oldest first: what was lost is a prefix of what was produced.
    expect(producedIds.slice(0, lost.length)).toEqual(lost);
    // The eviction report itself reached the endpoint as an audit record.
    const report = receiver.events('RunwatchAudit').find((e) => e.data.baseData.properties?.rule === 'runwatch.spool_evicted')!;
    expect(report.data.baseData.properties).toMatchObject({ severity: 'medium', 'details.lost.azure-monitor': expect.stringMatching(/^\d+$/) });
  });
});
