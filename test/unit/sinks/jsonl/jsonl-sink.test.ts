import { mkdtempSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RunwatchRecord } from '../../../../agent/events/types.js';
import { silentLogger } from '../../../../agent/log.js';
import { JsonlSink } from '../../../../agent/sinks/jsonl/jsonl-sink.js';

const rec = (i: number): RunwatchRecord => ({
  id: `r${i}`,
  time: new Date(0).toISOString(),
  kind: 'audit',
  host: 'h',
  rule: 'audit.exec',
  severity: 'medium',
  message: `m${i}`,
});
const lines = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as RunwatchRecord);

describe('JsonlSink', () => {
  it('appends one record per line and follows a rename (logrotate) by reopening', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-jsonl-'));
    const file = path.join(dir, 'sub', 'records.jsonl');
    const sink = new JsonlSink({ path: file, fsyncIntervalMs: 50, log: silentLogger });
    expect(await sink.deliver([rec(1), rec(2)])).toEqual({ ok: true });
    renameSync(file, `${file}.1`);
    await sink.deliver([rec(3)]);
    await sink.shutdown();
    expect(lines(`${file}.1`).map((r) => r.id)).toEqual(['r1', 'r2']);
    expect(lines(file).map((r) => r.id)).toEqual(['r3']);
  });

  it('reopens on request (SIGHUP) after copytruncate-style moves', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-jsonl-'));
    const file = path.join(dir, 'records.jsonl');
    const sink = new JsonlSink({ path: file, fsyncIntervalMs: 50, log: silentLogger });
    await sink.deliver([rec(1)]);
    sink.reopen();
    await sink.deliver([rec(2)]);
    await sink.shutdown();
    expect(lines(file).map((r) => r.id)).toEqual(['r1', 'r2']);
  });

  it('writes to a given stdout writer for "-"', async () => {
    let out = '';
    const sink = new JsonlSink({ path: '-', fsyncIntervalMs: 50, log: silentLogger, write: (t) => (out += t) });
    await sink.deliver([rec(7)]);
    expect(JSON.parse(out.trim()).id).toBe('r7');
  });
});
