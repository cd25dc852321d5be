import type { RunwatchRecord } from '../events/types.js';

interface OpenGroup {
  openedAt: number;
  repeats: number;
  firstSeen?: string;
  last?: RunwatchRecord;
}

/**
 * Groups identical alerts (same container, rule and subject) within a window. The first one goes out at
 * once; repeats within the window go out as one record when the window closes, with `count` = the
 * number of repeats it stands for and their firstSeen/lastSeen. Summing `count` (1 when absent) over
 * the output gives the exact number of occurrences. Audit records are never grouped: each is evidence.
 */
export class AlertGrouper {
  private readonly open = new Map<string, OpenGroup>();
  grouped = 0;

  constructor(private readonly windowMs: number) {}

  /** Records to send now. */
  add(rec: RunwatchRecord, subject: string | undefined, now: number): RunwatchRecord[] {
    if (this.windowMs <= 0 || rec.kind !== 'alert') return [rec];
    const key = `${rec.container?.id ?? ''}\0${rec.rule}\0${subject ?? rec.message}`;
    const g = this.open.get(key);
    if (!g || now - g.openedAt >= this.windowMs) {
      const out = g ? this.close(key, g) : [];
      this.open.set(key, { openedAt: now, repeats: 0 });
      out.push(rec);
      return out;
    }
    g.repeats++;
    g.firstSeen ??= rec.time;
    g.last = rec;
    this.grouped++;
    return [];
  }

  /** Summaries of windows that have closed by `now` (all of them with `all`). */
  expire(now: number, all = false): RunwatchRecord[] {
    const out: RunwatchRecord[] = [];
    for (const [key, g] of this.open) {
      if (all || now - g.openedAt >= this.windowMs) out.push(...this.close(key, g));
    }
    return out;
  }

  get openGroups(): number {
    return this.open.size;
  }

  private close(key: string, g: OpenGroup): RunwatchRecord[] {
    this.open.delete(key);
    if (!g.last || g.repeats === 0) return [];
    return [{ ...g.last, count: g.repeats, firstSeen: g.firstSeen, lastSeen: g.last.time, message: `${g.last.message} (repeated ${g.repeats} times)` }];
  }
}
