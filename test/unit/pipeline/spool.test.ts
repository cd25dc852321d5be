import { appendFileSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunwatchRecord } from '../../../agent/events/types.js';
import { silentLogger } from '../../../agent/log.js';
import { RecordSpool, type SpoolEviction, type RecordSpoolOptions } from '../../../agent/pipeline/spool.js';
import { alertRecord } from '../../fixtures/records.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'rw-spool-'));
  dirs.push(d);
  return d;
}

const records = (from: number, n: number): RunwatchRecord[] => Array.from({ length: n }, (_, i) => alertRecord(from + i));
const open = (dir: string, over: Partial<RecordSpoolOptions> = {}) =>
  new RecordSpool({ dir, maxBytes: 1024 * 1024, consumers: ['a'], log: silentLogger, ...over });

function drain(spool: RecordSpool, consumer: string, max = 1000): string[] {
  const ids: string[] = [];
  for (let b = spool.read(consumer, max, 1 << 20); b; b = spool.read(consumer, max, 1 << 20)) {
    ids.push(...b.records.map((r) => r.id));
    spool.commit(consumer, b.end);
  }
  return ids;
}

const segmentFiles = (dir: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.seg'))
    .sort();
const diskBytes = (dir: string) => segmentFiles(dir).reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);

describe('RecordSpool', () => {
  it('keeps records and acknowledgements across a restart, in order', () => {
    const dir = tempDir();
    let spool = open(dir, { segmentBytes: 64 * 1024 });
    spool.append(records(0, 30));
    const first = spool.read('a', 10, 1 << 20)!;
    expect(first.records.map((r) => r.id)).toEqual(records(0, 10).map((r) => r.id));
    spool.commit('a', first.end);
    spool.read('a', 10, 1 << 20); // read but not acknowledged: must come back after the restart
    spool.close();

    spool = open(dir, { segmentBytes: 4096 });
    expect(drain(spool, 'a')).toEqual(records(10, 20).map((r) => r.id));
    expect(spool.read('a', 10, 1 << 20)).toBeUndefined();
    spool.append(records(30, 2));
    expect(drain(spool, 'a')).toEqual(records(30, 2).map((r) => r.id));
    spool.close();
  });

  it('lets each consumer acknowledge on its own and deletes a segment only when all are past it', () => {
    const dir = tempDir();
    const spool = open(dir, { consumers: ['azure', 'otlp'], segmentBytes: 4096 });
    spool.append(records(0, 40));
    const segments = segmentFiles(dir).length;
    expect(segments).toBeGreaterThan(2);
    expect(drain(spool, 'azure')).toHaveLength(40);
    expect(segmentFiles(dir).length).toBe(segments);
    expect(spool.backlogBytes('otlp')).toBe(diskBytes(dir));
    expect(drain(spool, 'otlp')).toHaveLength(40);
    expect(segmentFiles(dir).length).toBe(1);
    expect(spool.backlogBytes('azure')).toBe(0);
    spool.close();
  });

  it('cuts a line torn by a crash at the tail, and skips and counts a corrupt line elsewhere', () => {
    const dir = tempDir();
    let spool = open(dir);
    spool.append(records(0, 3));
    spool.close();
    const [seg] = segmentFiles(dir);
    appendFileSync(path.join(dir, seg), '{"time":"2024-01-01T00:00:00.000Z","kind":"al');
    spool = open(dir);
    expect(spool.counters.repairedBytes).toBeGreaterThan(0);
    spool.append(records(3, 1));
    expect(drain(spool, 'a')).toEqual(records(0, 4).map((r) => r.id));
    spool.close();

    const dir2 = tempDir();
    writeFileSync(
      path.join(dir2, '00000000000000000001.seg'),
      [JSON.stringify(alertRecord(0)), '\u0000\u0000garbage', JSON.stringify(alertRecord(1)), ''].join('\n'),
    );
    spool = open(dir2);
    expect(drain(spool, 'a')).toEqual([alertRecord(0).id, alertRecord(1).id]);
    expect(spool.counters.corruptLines).toBe(1);
    spool.close();
  });

  it('never exceeds maxBytes on disk: evicts oldest first and counts exactly what each consumer lost', () => {
    const dir = tempDir();
    const evictions: SpoolEviction[] = [];
    const maxBytes = 16 * 1024;
    const spool = open(dir, { consumers: ['fast', 'slow'], maxBytes, onEvict: (e) => evictions.push(e) });
    let appended = 0;
    const fastGot: string[] = [];
    for (let i = 0; i < 30; i++) {
      spool.append(records(appended, 3));
      appended += 3;
      expect(diskBytes(dir)).toBeLessThanOrEqual(maxBytes);
      expect(spool.bytes).toBe(diskBytes(dir));
      fastGot.push(...drain(spool, 'fast'));
    }
    const slowGot = drain(spool, 'slow');
    const lostSlow = evictions.reduce((n, e) => n + (e.lostByConsumer.slow ?? 0), 0);
    expect(evictions.length).toBeGreaterThan(0);
    expect(lostSlow).toBeGreaterThan(0);
    // Exact accounting: what the slow consumer got plus what it was told it lost is everything appended.
    expect(slowGot.length + lostSlow).toBe(appended);
    expect(spool.evictedByConsumer.slow).toBe(lostSlow);
    // Oldest first: what survived is the newest, contiguous tail.
    expect(slowGot).toEqual(records(appended - slowGot.length, slowGot.length).map((r) => r.id));
    // The fast consumer was always caught up, so it lost nothing.
    expect(fastGot).toHaveLength(appended);
    expect(evictions.every((e) => !e.lostByConsumer.fast)).toBe(true);
    spool.close();
  });

  it('keeps the newest records of a single batch larger than the whole spool, and reports the rest', () => {
    const dir = tempDir();
    const evictions: SpoolEviction[] = [];
    const spool = open(dir, { maxBytes: 8 * 1024, onEvict: (e) => evictions.push(e) });
    spool.append(records(0, 40));
    const got = drain(spool, 'a');
    expect(diskBytes(dir)).toBeLessThanOrEqual(8 * 1024);
    expect(got.length).toBeGreaterThan(0);
    expect(got).toEqual(records(40 - got.length, got.length).map((r) => r.id));
    expect(evictions.reduce((n, e) => n + e.lostByConsumer.a, 0)).toBe(40 - got.length);
    spool.close();
  });

  it('remembers accepted and possibly-delivered records of a batch in progress across a restart', () => {
    const dir = tempDir();
    let spool = open(dir);
    spool.append(records(0, 5));
    const batch = spool.read('a', 5, 1 << 20)!;
    const [r0, r1, r2] = batch.records;
    spool.markProgress('a', batch, { accepted: [r0.id, r2.id], uncertain: [r1.id] });
    spool.close();

    spool = open(dir);
    const again = spool.read('a', 5, 1 << 20)!;
    expect(again.records.map((r) => r.id)).toEqual([r1.id, ...records(3, 2).map((r) => r.id)]);
    expect([...again.uncertain]).toEqual([r1.id]);
    expect(spool.counters.skippedAccepted).toBe(2);
    spool.commit('a', again.end);
    spool.close();
    spool = open(dir);
    expect(spool.read('a', 5, 1 << 20)).toBeUndefined();
    spool.close();
  });

  it('detaches a batch whose segment was evicted while it was being delivered', () => {
    const dir = tempDir();
    const spool = open(dir, { maxBytes: 16 * 1024 });
    spool.append(records(0, 5));
    const batch = spool.read('a', 5, 1 << 20)!;
    expect(spool.holds('a', batch)).toBe(true);
    for (let i = 0; i < 20; i++) spool.append(records(100 + i * 3, 3));
    expect(spool.holds('a', batch)).toBe(false);
    spool.commit('a', batch.end); // stale: ignored
    const next = spool.read('a', 1, 1 << 20)!;
    expect(Number(next.records[0].id.slice(-12))).toBeGreaterThanOrEqual(100);
    spool.close();
  });
});
