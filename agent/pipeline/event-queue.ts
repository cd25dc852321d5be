import type { RunwatchEvent } from '../events/types.js';

/**
 * Bounded FIFO between sensors and the pipeline. `push` never blocks and returns false when full;
 * every refused event is counted (STYLE: no unbounded queues, no uncounted drops).
 */
export class EventQueue {
  private readonly ring: (RunwatchEvent | undefined)[];
  private head = 0;
  private size = 0;
  /** One wait shared by every caller until an event (or wake) settles it: waits never pile up. */
  private waiting: { promise: Promise<void>; resolve: () => void } | undefined;
  pushed = 0;
  dropped = 0;

  constructor(readonly capacity: number) {
    this.ring = new Array(capacity);
  }

  get length(): number {
    return this.size;
  }

  push(ev: RunwatchEvent): boolean {
    if (this.size === this.capacity) {
      this.dropped++;
      return false;
    }
    this.ring[(this.head + this.size) % this.capacity] = ev;
    this.size++;
    this.pushed++;
    if (this.waiting) this.wake();
    return true;
  }

  /** Takes up to `max` events, oldest first. */
  take(max: number): RunwatchEvent[] {
    const n = Math.min(max, this.size);
    const out = new Array<RunwatchEvent>(n);
    for (let i = 0; i < n; i++) {
      out[i] = this.ring[this.head] as RunwatchEvent;
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.capacity;
    }
    this.size -= n;
    return out;
  }

  /** Resolves when at least one event is queued (or at once if there is one). */
  whenNotEmpty(): Promise<void> {
    if (this.size > 0) return Promise.resolve();
    if (!this.waiting) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.waiting = { promise, resolve };
    }
    return this.waiting.promise;
  }

  /** Wakes a waiting consumer without an event (used at shutdown). */
  wake(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.resolve();
  }
}
