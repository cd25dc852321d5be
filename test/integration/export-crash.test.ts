import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { silentLogger } from '../../agent/log.js';
import { OtelSink } from '../../agent/sinks/otel/otel-sink.js';
import { installLoopbackGuard, IngestionReceiver } from '../helpers/ingestion-receiver.js';
import { waitFor } from '../helpers/test-agent.js';

const CHILD = fileURLToPath(new URL('../fixtures/export-sink-child.mjs', import.meta.url));
const guard = installLoopbackGuard();
afterAll(() => {
  guard.restore();
  expect(guard.violations).toEqual([]);
});

describe('delivery guarantee across a crash (a real process killed mid-request)', () => {
  it('a new process over the same spool delivers everything the killed one had accepted, and counts what may have arrived twice', async () => {
    const receiver = await IngestionReceiver.start();
    onTestFinished(() => receiver.stop());
    const stateDir = mkdtempSync(path.join(tmpdir(), 'rw-crash-'));
    onTestFinished(() => rmSync(stateDir, { recursive: true, force: true }));
    const configText = JSON.stringify({
      stateDir,
      host: 'crash-test',
      outputs: {
        azureMonitor: { connectionString: receiver.connectionString(), allowHttpLoopback: true },
        spool: { retryInitialMs: 50, retryMaxMs: 200, requestTimeoutMs: 60_000 },
      },
      metrics: { enabled: false },
    });
    const RECORDS = 800; // more than one request (500 records at most)

    // The endpoint takes the first request and never answers; the process dies while waiting for it.
    receiver.mode = { kind: 'hang' };
    const child = spawn(process.execPath, [CHILD], {
      env: { ...process.env, RUNWATCH_CHILD_CONFIG: configText, RUNWATCH_CHILD_STATE: stateDir, RUNWATCH_CHILD_RECORDS: String(RECORDS) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    onTestFinished(() => void child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(
      () => out.includes('spooled') && receiver.requests.length > 0,
      60_000,
      () => `child output: ${out}`,
    );
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const hungIds = receiver.requests.flatMap((r) => r.envelopes.map((e) => e.data.baseData.properties?.id));
    expect(hungIds.length).toBeGreaterThan(0);
    expect(hungIds.length).toBeLessThan(RECORDS);

    // Restart: a new sink in this process over the same state directory; the endpoint is fine again.
    receiver.mode = { kind: 'accept' };
    const sink = new OtelSink({ config: parseConfig(configText, path.join(stateDir, 'config.yaml')), log: silentLogger, notify: () => {} });
    onTestFinished(() => sink.shutdown());
    await waitFor(
      () => Number(sink.stats()['azure-monitor.backlogBytes']) === 0,
      30_000,
      () => JSON.stringify(sink.stats()),
    );
    await sink.shutdown();

    const ids = receiver.acceptedIds();
    const expected = Array.from({ length: RECORDS }, (_, i) => `crash-${String(i).padStart(6, '0')}`);
    expect(new Set(ids)).toEqual(new Set(expected));
    // Exactly the records of the request that died with the process arrived twice, and the new process counted them.
    const dupes = ids.length - new Set(ids).size;
    expect(dupes).toBe(hungIds.length);
    expect(sink.stats()['azure-monitor.possibleDuplicates']).toBe(dupes);
    // In order: the spool is FIFO.
    expect([...new Set(ids)]).toEqual(expected);
  });
});
