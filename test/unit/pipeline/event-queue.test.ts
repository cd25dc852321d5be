import { describe, expect, it } from 'vitest';
import { EventQueue } from '../../../agent/pipeline/event-queue.js';
import type { RunwatchEvent } from '../../../agent/events/types.js';

const ev = (pid: number): RunwatchEvent => ({ kind: 'process_exit', ts: 0, pid });

describe('EventQueue', () => {
  it('refuses and counts what does not fit, and hands out the oldest first', () => {
    const q = new EventQueue(2);
    expect([q.push(ev(1)), q.push(ev(2)), q.push(ev(3))]).toEqual([true, true, false]);
    expect(q.dropped).toBe(1);
    expect(q.take(5).map((e) => (e as { pid: number }).pid)).toEqual([1, 2]);
    expect(q.length).toBe(0);
  });

  it('settles every wait with one push, however many were made while it was empty (an idle agent waits once a second)', async () => {
    const q = new EventQueue(4);
    const waits = Array.from({ length: 200_000 }, () => q.whenNotEmpty());
    // One shared wait, not a chain of 200,000 callbacks that one push would unwind through the stack.
    expect(new Set(waits).size).toBe(1);
    let settled = false;
    void Promise.all(waits).then(() => (settled = true));
    q.push(ev(1));
    await Promise.resolve();
    await Promise.resolve();
    expect(settled).toBe(true);
    // The next wait is a new one, settled by wake() at shutdown.
    q.take(1);
    const next = q.whenNotEmpty();
    expect(next).not.toBe(waits[0]);
    q.wake();
    await expect(next).resolves.toBeUndefined();
  });
});
