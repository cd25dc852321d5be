import type { ContainerInfo, ResourceSampleEvent, RunwatchEvent, RunwatchRecord } from '../events/types.js';
import type { Decider } from '../engine/engine.js';
import type { Logger } from '../log.js';
import type { Sink } from '../sinks/sink.js';
import { AlertGrouper } from './alert-grouper.js';
import { toContainerRef, type ContainerInventory } from './container-inventory.js';
import type { DockerClientRuns } from './docker-client-runs.js';
import type { EventQueue } from './event-queue.js';
import { buildRecord } from './record-builder.js';

export interface PipelineOptions {
  queue: EventQueue;
  inventory: ContainerInventory;
  /** Host `docker` CLI runs, to name the host user behind admin actions. */
  dockerClients?: DockerClientRuns;
  /** Read on every event, so a hot reload that swaps the decider takes effect at once. */
  decider: () => Decider;
  sinks: readonly Sink[];
  host: string;
  log: Logger;
  groupWindowMs: number;
  batchSize?: number;
  /** Records a sink may hold back while it is failing before the oldest are dropped (counted). */
  maxPendingPerSink?: number;
  /** Called for each record after it was built (the learner and tests listen here). */
  onRecord?: (rec: RunwatchRecord) => void;
  /** Called for each event after enrichment (learning mode watches behaviour here). */
  onEvent?: (ev: RunwatchEvent, container: ContainerInfo | undefined) => void;
}

export interface StageCounters {
  received: number;
  emitted: number;
  dropped: number;
}

class SinkChannel {
  pending: RunwatchRecord[] = [];
  delivered = 0;
  failures = 0;
  dropped = 0;
  retryAt = 0;
  backoffMs = 0;
  lastError = '';

  constructor(
    readonly sink: Sink,
    private readonly maxPending: number,
  ) {}

  enqueue(records: readonly RunwatchRecord[]): void {
    for (const r of records) this.pending.push(r);
    const over = this.pending.length - this.maxPending;
    if (over > 0) {
      this.pending.splice(0, over);
      this.dropped += over;
    }
  }

  async pump(now: number, log: Logger): Promise<void> {
    if (this.pending.length === 0 || now < this.retryAt) return;
    const batch = this.pending;
    this.pending = [];
    let result;
    try {
      result = await this.sink.deliver(batch);
    } catch (err) {
      result = { ok: false as const, retriable: true, error: String(err) };
    }
    if (result.ok) {
      this.delivered += batch.length;
      this.backoffMs = 0;
      return;
    }
    this.failures++;
    this.lastError = result.error;
    if (!result.retriable) {
      this.dropped += batch.length;
      log.error('sink rejected records', { sink: this.sink.name, records: batch.length, error: result.error });
      return;
    }
    this.pending = batch.concat(this.pending);
    this.backoffMs = Math.min(Math.max(this.backoffMs * 2, 100), 10_000);
    this.retryAt = now + this.backoffMs;
    if (this.failures === 1 || this.failures % 50 === 0)
      log.warn('sink failed, will retry', { sink: this.sink.name, error: result.error, pending: this.pending.length });
  }
}

/**
 * The one path every event takes: queue → enrichment (container context) → decide → record → group → sinks.
 * Every stage counts what it received, emitted and dropped.
 */
export class Pipeline {
  readonly counters = {
    queue: { received: 0, emitted: 0, dropped: 0 } as StageCounters,
    enrich: { received: 0, emitted: 0, dropped: 0, unattributed: 0 },
    decide: { received: 0, emitted: 0, dropped: 0, errors: 0 },
    group: { received: 0, emitted: 0, dropped: 0 },
  };
  private readonly grouper: AlertGrouper;
  private readonly channels: SinkChannel[];
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly batchSize: number;

  constructor(private readonly opts: PipelineOptions) {
    this.grouper = new AlertGrouper(opts.groupWindowMs);
    this.batchSize = opts.batchSize ?? 512;
    this.channels = opts.sinks.map((s) => new SinkChannel(s, opts.maxPendingPerSink ?? 100_000));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Drains what is queued, flushes grouped alerts and delivers everything before resolving. */
  async stop(): Promise<void> {
    this.running = false;
    this.opts.queue.wake();
    await this.loop;
    this.processBatch(this.opts.queue.take(Number.MAX_SAFE_INTEGER));
    this.route(this.grouper.expire(Date.now(), true));
    for (let attempt = 0; attempt < 3 && this.channels.some((c) => c.pending.length); attempt++) {
      for (const c of this.channels) {
        c.retryAt = 0;
        await c.pump(Date.now(), this.opts.log);
      }
    }
    for (const c of this.channels) await c.sink.flush();
  }

  /** Processes one batch synchronously up to the sinks (used by the loop, benchmarks and tests). */
  processBatch(events: readonly RunwatchEvent[]): void {
    const samples: ResourceSampleEvent[] = [];
    const now = Date.now();
    this.counters.queue.received += events.length;
    this.counters.queue.emitted += events.length;
    for (const ev of events) {
      const container = this.enrich(ev);
      this.opts.onEvent?.(ev, container);
      if (ev.kind === 'resource_sample') samples.push(ev);
      const findings = this.decide(ev, container);
      for (const f of findings) {
        const rec = buildRecord(ev, f, this.opts.host);
        this.opts.onRecord?.(rec);
        this.counters.group.received++;
        this.route(this.grouper.add(rec, f.subject, now));
      }
    }
    this.route(this.grouper.expire(now));
    if (samples.length) for (const c of this.channels) c.sink.recordMetrics?.(samples);
  }

  health(): Record<string, unknown> {
    return {
      counters: this.counters,
      queueDepth: this.opts.queue.length,
      queueDropped: this.opts.queue.dropped,
      sinks: this.channels.map((c) => ({
        name: c.sink.name,
        delivered: c.delivered,
        pending: c.pending.length,
        dropped: c.dropped,
        failures: c.failures,
        lastError: c.lastError,
        ...c.sink.stats?.(),
      })),
    };
  }

  private async run(): Promise<void> {
    const { queue } = this.opts;
    while (this.running) {
      if (queue.length === 0) {
        await untilOrAfter(queue.whenNotEmpty(), this.channels.some((c) => c.pending.length) ? 100 : 1000);
      }
      if (!this.running) break;
      this.processBatch(queue.take(this.batchSize));
      await this.pumpSinks();
      // Let sensors' I/O callbacks run between batches under sustained load.
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  private async pumpSinks(): Promise<void> {
    const now = Date.now();
    await Promise.all(this.channels.map((c) => c.pump(now, this.opts.log)));
  }

  private enrich(ev: RunwatchEvent): ContainerInfo | undefined {
    this.counters.enrich.received++;
    this.counters.enrich.emitted++;
    if (ev.kind === 'container' && ev.info) {
      ev.container ??= toContainerRef(ev.info);
      return ev.info;
    }
    if (!ev.containerId) return undefined;
    const info = this.opts.inventory.get(ev.containerId);
    if (!info) {
      this.counters.enrich.unattributed++;
      return undefined;
    }
    ev.container ??= toContainerRef(info);
    if (ev.kind === 'docker_action' && !ev.hostUser && this.opts.dockerClients) {
      const who = this.opts.dockerClients.resolve(ev, info.name);
      if (who) ev.hostUser = who;
    }
    return info;
  }

  private decide(ev: RunwatchEvent, container: ContainerInfo | undefined) {
    this.counters.decide.received++;
    try {
      const findings = this.opts.decider().decide(ev, { container });
      this.counters.decide.emitted += findings.length;
      return findings;
    } catch (err) {
      // Deciders never throw by contract; if one does, count it and keep going.
      this.counters.decide.errors++;
      if (this.counters.decide.errors <= 5) this.opts.log.error('decider threw', { kind: ev.kind, error: String(err) });
      return [];
    }
  }

  private route(records: readonly RunwatchRecord[]): void {
    if (records.length === 0) return;
    this.counters.group.emitted += records.length;
    for (const c of this.channels) c.enqueue(records);
  }
}

/** Waits for `event`, at most `ms`; the timer is cleared when the event comes first (a wake per batch would otherwise leave one behind each time). */
async function untilOrAfter(event: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((r) => (timer = setTimeout(r, ms).unref()));
  try {
    await Promise.race([event, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
