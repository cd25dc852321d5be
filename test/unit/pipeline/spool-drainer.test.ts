import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunwatchRecord } from '../../../agent/events/types.js';
import { silentLogger } from '../../../agent/log.js';
import { RecordSpool } from '../../../agent/pipeline/spool.js';
import { SpoolDrainer, type SendResult, type SpoolDestination } from '../../../agent/pipeline/spool-drainer.js';
import { waitFor } from '../../helpers/test-agent.js';
import { alertRecord } from '../../fixtures/records.js';

/** A destination that answers each request by a script and remembers what it was sent. */
class ScriptedDestination implements SpoolDestination {
  readonly name = 'dest';
  readonly requests: string[][] = [];
  /** Ids the "endpoint" holds, duplicates included. */
  readonly stored: string[] = [];
  constructor(private readonly answer: (ids: string[], attempt: number) => SendResult | 'store-then-timeout') {}
  async send(records: readonly RunwatchRecord[]): Promise<SendResult> {
    const ids = records.map((r) => r.id);
    this.requests.push(ids);
    const a = this.answer(ids, this.requests.length);
    if (a === 'store-then-timeout') {
      this.stored.push(...ids);
      return { kind: 'failed', retriable: true, ambiguous: true, error: 'request failed: TimeoutError' };
    }
    if (a.kind === 'items') a.outcomes.forEach((o, i) => o === 'accepted' && this.stored.push(ids[i]));
    return a;
  }
  async shutdown() {}
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(answer: ConstructorParameters<typeof ScriptedDestination>[0], dir = mkdtempSync(path.join(tmpdir(), 'rw-drain-'))) {
  dirs.push(dir);
  const spool = new RecordSpool({ dir, maxBytes: 1 << 20, consumers: ['dest'], log: silentLogger });
  const destination = new ScriptedDestination(answer);
  const notices: { rule: string; details?: Record<string, string | number | boolean> }[] = [];
  const drainer = new SpoolDrainer({
    spool,
    destination,
    log: silentLogger,
    notify: (rule, _m, details) => notices.push({ rule, details }),
    retryInitialMs: 5,
    retryMaxMs: 20,
  });
  return { dir, spool, destination, drainer, notices };
}

const batch = (n: number, from = 0) => Array.from({ length: n }, (_, i) => alertRecord(from + i));
const accepted = (n: number): SendResult => ({ kind: 'items', outcomes: new Array(n).fill('accepted') });

describe('SpoolDrainer', () => {
  it('on partial success resends only the items that failed with a retriable status, and counts the rejected ones', async () => {
    const { spool, destination, drainer, notices } = setup((ids, attempt) =>
      attempt === 1
        ? { kind: 'items', status: 206, outcomes: ids.map((_, i) => (i === 1 || i === 3 ? 'retry' : i === 4 ? 'rejected' : 'accepted')) }
        : accepted(ids.length),
    );
    spool.append(batch(6));
    drainer.start();
    await waitFor(
      () => spool.backlogBytes('dest') === 0,
      5000,
      () => JSON.stringify(drainer.health()),
    );
    await drainer.stop();
    const ids = batch(6).map((r) => r.id);
    expect(destination.requests).toEqual([ids, [ids[1], ids[3]]]);
    expect(destination.stored.sort()).toEqual([ids[0], ids[1], ids[2], ids[3], ids[5]].sort());
    expect(drainer.stats).toMatchObject({ delivered: 5, rejected: 1, resentItems: 2, possibleDuplicates: 0 });
    expect(notices).toEqual([{ rule: 'runwatch.export_rejected', details: expect.objectContaining({ records: 1, destination: 'dest', firstId: ids[4] }) }]);
    spool.close();
  });

  it('counts and reports records resent after a request that got no answer; the endpoint holds each at least once', async () => {
    const { spool, destination, drainer, notices } = setup((ids, attempt) =>
      attempt === 1
        ? 'store-then-timeout'
        : attempt === 2
          ? { kind: 'failed', retriable: true, ambiguous: false, error: 'HTTP 503', status: 503 }
          : accepted(ids.length),
    );
    spool.append(batch(4));
    drainer.start();
    await waitFor(
      () => spool.backlogBytes('dest') === 0 && notices.length > 0,
      5000,
      () => JSON.stringify(drainer.health()),
    );
    await drainer.stop();
    const dupes = destination.stored.length - new Set(destination.stored).size;
    expect(new Set(destination.stored)).toEqual(new Set(batch(4).map((r) => r.id)));
    expect(dupes).toBe(4);
    expect(drainer.stats.possibleDuplicates).toBe(dupes);
    expect(notices).toEqual([{ rule: 'runwatch.export_duplicates', details: expect.objectContaining({ records: 4, destination: 'dest' }) }]);
    spool.close();
  });

  it('after a restart, neither resends what was accepted nor forgets what may already be delivered', async () => {
    const first = setup((ids, attempt) =>
      attempt === 1
        ? { kind: 'items', status: 206, outcomes: ids.map((_, i) => (i < 2 ? 'accepted' : 'retry')) }
        : attempt === 2
          ? 'store-then-timeout'
          : { kind: 'failed', retriable: true, ambiguous: false, error: 'HTTP 503', status: 503 },
    );
    first.spool.append(batch(4));
    first.drainer.start();
    await waitFor(
      () => first.destination.requests.length >= 3,
      5000,
      () => 'three requests',
    );
    await first.drainer.stop();
    first.spool.close();

    const second = setup((ids) => accepted(ids.length), first.dir);
    second.drainer.start();
    await waitFor(
      () => second.spool.backlogBytes('dest') === 0,
      5000,
      () => JSON.stringify(second.drainer.health()),
    );
    await second.drainer.stop();
    const ids = batch(4).map((r) => r.id);
    expect(second.destination.requests).toEqual([[ids[2], ids[3]]]);
    const stored = [...first.destination.stored, ...second.destination.stored];
    expect(new Set(stored)).toEqual(new Set(ids));
    expect(second.drainer.stats.possibleDuplicates).toBe(stored.length - ids.length);
    expect(second.drainer.stats.possibleDuplicates).toBe(2);
    expect(second.notices.map((n) => n.rule)).toEqual(['runwatch.export_duplicates']);
    second.spool.close();
  });

  it('gives up on a request the endpoint refuses for good, and moves on', async () => {
    const { spool, destination, drainer, notices } = setup((ids, attempt) =>
      attempt === 1 ? { kind: 'failed', retriable: false, ambiguous: false, error: 'HTTP 404', status: 404 } : accepted(ids.length),
    );
    spool.append(batch(3));
    drainer.start();
    await waitFor(
      () => spool.backlogBytes('dest') === 0,
      5000,
      () => JSON.stringify(drainer.health()),
    );
    spool.append(batch(2, 10));
    await waitFor(
      () => destination.stored.length === 2,
      5000,
      () => JSON.stringify(drainer.health()),
    );
    await drainer.stop();
    expect(drainer.stats).toMatchObject({ rejected: 3, delivered: 2 });
    expect(notices.map((n) => n.rule)).toEqual(['runwatch.export_rejected']);
    spool.close();
  });

  it('keeps retrying through an outage and stops without waiting for it to end', async () => {
    let down = true;
    const { spool, destination, drainer } = setup((ids) =>
      down ? { kind: 'failed', retriable: true, ambiguous: false, error: 'request failed: ECONNREFUSED' } : accepted(ids.length),
    );
    spool.append(batch(3));
    drainer.start();
    await waitFor(
      () => destination.requests.length >= 4,
      5000,
      () => 'retries',
    );
    expect(drainer.health()).toMatchObject({ state: 'backoff', lastError: 'request failed: ECONNREFUSED' });
    await drainer.stop(60_000);
    expect(spool.backlogBytes('dest')).toBeGreaterThan(0);
    down = false;
    spool.close();
  });
});
