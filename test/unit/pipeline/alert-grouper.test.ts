import { describe, expect, it } from 'vitest';
import type { RunwatchRecord } from '../../../agent/events/types.js';
import { AlertGrouper } from '../../../agent/pipeline/alert-grouper.js';
import { alertRecord, auditRecord } from '../../fixtures/records.js';

const T0 = 1_700_000_000_000;
const at = (ms: number, over: Partial<RunwatchRecord> = {}, i = ms) => alertRecord(i, { time: new Date(T0 + ms).toISOString(), ...over });
const occurrences = (out: readonly RunwatchRecord[]) => out.reduce((n, r) => n + (r.count ?? 1), 0);

describe('AlertGrouper', () => {
  it('sends the first alert at once and the repeats of the window as one summary with count, firstSeen and lastSeen', () => {
    const g = new AlertGrouper(60_000);
    const first = g.add(at(0), '/usr/bin/nc', T0);
    expect(first).toHaveLength(1);
    expect(first[0].count).toBeUndefined();
    expect(g.add(at(1000), '/usr/bin/nc', T0 + 1000)).toEqual([]);
    expect(g.add(at(2000), '/usr/bin/nc', T0 + 2000)).toEqual([]);
    expect(g.add(at(3000), '/usr/bin/nc', T0 + 3000)).toEqual([]);
    expect(g.expire(T0 + 59_999)).toEqual([]);
    const [summary, ...rest] = g.expire(T0 + 60_000);
    expect(rest).toEqual([]);
    expect(summary).toMatchObject({ count: 3, firstSeen: at(1000).time, lastSeen: at(3000).time, id: at(3000).id, rule: 'Unexpected Process' });
    expect(summary.message).toContain('repeated 3 times');
    expect(g.openGroups).toBe(0);
    expect(g.grouped).toBe(3);
  });

  it('keeps different containers, rules and subjects apart', () => {
    const g = new AlertGrouper(60_000);
    const other = { ...at(0).container!, id: 'e'.repeat(64) };
    const out = [
      ...g.add(at(0), '/usr/bin/nc', T0),
      ...g.add(at(1, { container: other }), '/usr/bin/nc', T0),
      ...g.add(at(2, { rule: 'Unexpected Write' }), '/usr/bin/nc', T0),
      ...g.add(at(3), '/bin/sh', T0),
      ...g.add(at(4), '/usr/bin/nc', T0),
    ];
    expect(out.map((r) => r.id)).toEqual([at(0).id, at(1).id, at(2).id, at(3).id]);
    expect(g.openGroups).toBe(4);
  });

  it('never groups audit records: each one is evidence', () => {
    const g = new AlertGrouper(60_000);
    expect(g.add(auditRecord(1), 'docker.exec', T0)).toHaveLength(1);
    expect(g.add(auditRecord(2), 'docker.exec', T0)).toHaveLength(1);
    expect(g.openGroups).toBe(0);
  });

  it('with a window of 0 passes everything through', () => {
    const g = new AlertGrouper(0);
    expect([...g.add(at(0), 's', T0), ...g.add(at(1), 's', T0)]).toHaveLength(2);
  });

  it('closes an expired window when the next repeat arrives, before opening a new one', () => {
    const g = new AlertGrouper(10_000);
    g.add(at(0), 's', T0);
    g.add(at(5000), 's', T0 + 5000);
    const out = g.add(at(10_000), 's', T0 + 10_000);
    expect(out.map((r) => [r.id, r.count])).toEqual([
      [at(5000).id, 1],
      [at(10_000).id, undefined],
    ]);
  });

  it('keeps counts exact: the counts of everything sent add up to the number of alerts, for any arrival pattern', () => {
    let seed = 42;
    const rand = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const g = new AlertGrouper(7_000);
    const sent: RunwatchRecord[] = [];
    const added = new Map<string, number>();
    let now = T0;
    for (let i = 0; i < 2000; i++) {
      now += Math.floor(rand() * 400);
      const subject = `s${Math.floor(rand() * 5)}`;
      const rule = `r${Math.floor(rand() * 3)}`;
      added.set(`${rule}/${subject}`, (added.get(`${rule}/${subject}`) ?? 0) + 1);
      sent.push(...g.add(at(now - T0, { rule, details: { subject } }, i), subject, now));
      if (rand() < 0.1) sent.push(...g.expire(now));
    }
    sent.push(...g.expire(now, true));
    expect(sent.length).toBeLessThan(1500);
    expect(occurrences(sent)).toBe(2000);
    for (const [key, n] of added) {
      const [rule, subject] = key.split('/');
      expect(occurrences(sent.filter((r) => r.rule === rule && r.details?.subject === subject))).toBe(n);
    }
    expect(new Set(sent.map((r) => r.id)).size).toBe(sent.length);
    expect(sent.filter((r) => r.count && Date.parse(r.firstSeen!) > Date.parse(r.lastSeen!))).toEqual([]);
    expect(g.openGroups).toBe(0);
  });
});
