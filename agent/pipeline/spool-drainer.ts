import type { RunwatchRecord } from '../events/types.js';
import type { Logger } from '../log.js';
import type { RecordSpool, SpoolBatch } from './spool.js';

/** What the endpoint did with one record of a request. */
export type ItemOutcome = 'accepted' | 'retry' | 'rejected';

/**
 * The answer to one export request. `items` when the endpoint answered about each record (all accepted, or
 * partial success); `failed` when the whole request failed. `ambiguous` means the request may have reached the
 * endpoint (timeout, connection reset): a resend can then duplicate.
 */
export type SendResult =
  | { kind: 'items'; outcomes: readonly ItemOutcome[]; status?: number; retryAfterMs?: number; detail?: string }
  | { kind: 'failed'; retriable: boolean; ambiguous: boolean; error: string; status?: number; retryAfterMs?: number };

export type FailedSend = Extract<SendResult, { kind: 'failed' }>;

/** One endpoint records are delivered to. `send` never throws; it reports what happened. */
export interface SpoolDestination {
  readonly name: string;
  send(records: readonly RunwatchRecord[], signal: AbortSignal): Promise<SendResult>;
  shutdown(): Promise<void>;
}

export interface SpoolDrainerOptions {
  spool: RecordSpool;
  destination: SpoolDestination;
  log: Logger;
  /** Reports rejections and duplicates as audit records. */
  notify: (rule: string, message: string, details?: Record<string, string | number | boolean>) => void;
  /** Counts records the endpoint refused for good (into runwatch.dropped). */
  onRejected?: (records: number) => void;
  retryInitialMs: number;
  retryMaxMs: number;
  batchMaxRecords?: number;
  batchMaxBytes?: number;
  /** How long to wait between duplicate reports while a backlog is still draining. */
  duplicateReportIntervalMs?: number;
}

/**
 * Delivers one consumer's spooled records in order and acknowledges them only once the endpoint accepted
 * them. Partial success is honoured: accepted records are noted at once (a restart does not resend them) and
 * only the items that failed with a retriable status are sent again. Records whose earlier attempt ended
 * without an answer are counted as possible duplicates when they are finally accepted.
 */
export class SpoolDrainer {
  readonly stats = { delivered: 0, rejected: 0, requests: 0, failedRequests: 0, resentItems: 0, possibleDuplicates: 0, abandonedEvicted: 0 };
  lastError = '';
  private state: 'idle' | 'sending' | 'backoff' | 'stopped' = 'idle';
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private wake: (() => void) | undefined;
  private backoffMs = 0;
  private unreportedDuplicates = 0;
  private lastDuplicateReport = 0;

  constructor(private readonly opts: SpoolDrainerOptions) {}

  get name(): string {
    return this.opts.destination.name;
  }

  get destination(): SpoolDestination {
    return this.opts.destination;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /**
   * Stops after giving a healthy endpoint up to `drainMs` to take the backlog; whatever is left stays spooled
   * for the next start. A request in flight is abandoned (its records count as possibly delivered).
   */
  async stop(drainMs = 0): Promise<void> {
    const deadline = Date.now() + drainMs;
    while (this.running && this.state !== 'backoff' && this.opts.spool.backlogBytes(this.name) > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    this.running = false;
    this.abort.abort();
    this.wake?.();
    await this.loop;
    this.state = 'stopped';
    // The pipeline has stopped by now: an audit record would go nowhere, the log still gets it.
    this.reportDuplicates(true, false);
  }

  health(): Record<string, number | string> {
    return { ...this.stats, state: this.state, backlogBytes: this.opts.spool.backlogBytes(this.name), lastError: this.lastError };
  }

  private async run(): Promise<void> {
    const { spool } = this.opts;
    while (this.running) {
      let batch: SpoolBatch | undefined;
      try {
        batch = spool.read(this.name, this.opts.batchMaxRecords ?? 500, this.opts.batchMaxBytes ?? 1024 * 1024);
      } catch (err) {
        this.lastError = `spool: ${err instanceof Error ? err.message : String(err)}`;
        this.opts.log.error('spool read failed, will retry', { destination: this.name, error: this.lastError });
        await this.backoff();
        continue;
      }
      if (!batch) {
        this.state = 'idle';
        this.reportDuplicates(true);
        // Nothing to do until the next append (or stop): no polling.
        await this.sleep(undefined, spool.whenAppended());
        continue;
      }
      try {
        await this.deliver(batch);
      } catch (err) {
        // A spool file error (disk full, removed directory): keep the loop alive and try again later.
        this.lastError = `spool: ${err instanceof Error ? err.message : String(err)}`;
        this.opts.log.error('delivery loop failed, will retry', { destination: this.name, error: this.lastError });
        await this.backoff();
      }
    }
  }

  private async deliver(batch: SpoolBatch): Promise<void> {
    const { spool, destination } = this.opts;
    const uncertain = new Set(batch.uncertain);
    const accepted: string[] = [];
    let pending: readonly RunwatchRecord[] = batch.records;
    while (pending.length && this.running) {
      if (!spool.holds(this.name, batch)) {
        // Evicted while we were retrying: the spool counted these as lost.
        this.stats.abandonedEvicted += pending.length;
        return;
      }
      spool.markProgress(this.name, batch, { accepted, uncertain: [...uncertain, ...pending.map((r) => r.id)] });
      this.state = 'sending';
      this.stats.requests++;
      const result = await destination.send(pending, this.abort.signal);
      if (result.kind === 'failed') {
        if (result.ambiguous) for (const r of pending) uncertain.add(r.id);
        if (!result.retriable) {
          this.reject(pending, result.error, result.status);
          pending = [];
          break;
        }
        this.failed(result.error, pending.length);
        spool.markProgress(this.name, batch, { accepted, uncertain: [...uncertain] });
        await this.backoff(result.retryAfterMs);
        continue;
      }
      const retry: RunwatchRecord[] = [];
      const rejected: RunwatchRecord[] = [];
      result.outcomes.forEach((outcome, i) => {
        const rec = pending[i];
        if (outcome === 'accepted') {
          accepted.push(rec.id);
          this.stats.delivered++;
          if (uncertain.has(rec.id)) {
            this.stats.possibleDuplicates++;
            this.unreportedDuplicates++;
          }
        } else if (outcome === 'retry') retry.push(rec);
        else rejected.push(rec);
      });
      if (rejected.length) this.reject(rejected, result.detail ?? 'rejected by the endpoint', result.status);
      pending = retry;
      if (pending.length) {
        this.stats.resentItems += pending.length;
        this.failed(result.detail ?? `HTTP ${result.status ?? '?'}`, pending.length);
        const done = new Set(accepted);
        spool.markProgress(this.name, batch, { accepted, uncertain: [...uncertain].filter((id) => !done.has(id)) });
        await this.backoff(result.retryAfterMs);
      } else {
        this.backoffMs = 0;
      }
    }
    if (pending.length === 0) {
      spool.commit(this.name, batch.end);
      this.reportDuplicates(false);
    }
  }

  /** Logs the first failure of a run of failures and then every 50th, so a long outage does not flood the log. */
  private failed(error: string, records: number): void {
    this.stats.failedRequests++;
    this.lastError = error;
    if (this.backoffMs === 0 || this.stats.failedRequests % 50 === 0)
      this.opts.log.warn('export failed, will retry', { destination: this.name, records, error, failedRequests: this.stats.failedRequests });
  }

  private reject(records: readonly RunwatchRecord[], error: string, status?: number): void {
    this.stats.rejected += records.length;
    this.opts.onRejected?.(records.length);
    this.opts.log.error('endpoint rejected records, not retriable', { destination: this.name, records: records.length, status, error });
    // A report about rejected reports would be rejected in turn: log it only.
    if (records.every((r) => r.rule.startsWith('runwatch.export_'))) return;
    this.opts.notify('runwatch.export_rejected', `${this.name} rejected ${records.length} record(s): ${error}`, {
      destination: this.name,
      records: records.length,
      ...(status !== undefined && { status }),
      firstId: records[0].id,
    });
  }

  private reportDuplicates(force: boolean, asRecord = true): void {
    if (
      this.unreportedDuplicates === 0 ||
      (!force && this.opts.spool.backlogBytes(this.name) > 0 && Date.now() - this.lastDuplicateReport < (this.opts.duplicateReportIntervalMs ?? 60_000))
    )
      return;
    const n = this.unreportedDuplicates;
    this.unreportedDuplicates = 0;
    this.lastDuplicateReport = Date.now();
    this.opts.log.warn('records resent after an unanswered request, the endpoint may hold duplicates', { destination: this.name, records: n });
    if (asRecord)
      this.opts.notify(
        'runwatch.export_duplicates',
        `${n} record(s) were sent again to ${this.name} after a request got no answer; the endpoint may hold them twice (same id)`,
        {
          destination: this.name,
          records: n,
          total: this.stats.possibleDuplicates,
        },
      );
  }

  private async backoff(retryAfterMs?: number): Promise<void> {
    const { retryInitialMs, retryMaxMs } = this.opts;
    this.backoffMs = Math.min(retryMaxMs, this.backoffMs ? this.backoffMs * 2 : retryInitialMs);
    // Jitter keeps several agents from hammering an endpoint that just came back at the same instant.
    const delay = Math.min(retryMaxMs, Math.max(retryAfterMs ?? 0, this.backoffMs * (0.8 + Math.random() * 0.4)));
    this.state = 'backoff';
    await this.sleep(delay);
  }

  private sleep(ms: number | undefined, or?: Promise<void>): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
      void or?.then(done);
    });
  }
}
