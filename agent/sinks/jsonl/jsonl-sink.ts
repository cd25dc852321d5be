import { closeSync, fstatSync, fsyncSync, mkdirSync, openSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { RunwatchRecord } from '../../events/types.js';
import type { Logger } from '../../log.js';
import type { DeliveryResult, Sink } from '../sink.js';

export interface JsonlSinkOptions {
  /** File path, or "-" for stdout. */
  path: string;
  fsyncIntervalMs: number;
  log: Logger;
  /** For stdout: where lines go (tests pass their own). */
  write?: (text: string) => void;
}

/**
 * One record per line. File appends are fsynced at a bounded interval, and the file is reopened on
 * SIGHUP (`reopen()`) or when it was renamed away, so logrotate's default (rename + create) works.
 */
export class JsonlSink implements Sink {
  readonly name: string;
  private fd: number | undefined;
  private ino = 0;
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private written = 0;
  private lastFsync = 0;

  constructor(private readonly opts: JsonlSinkOptions) {
    this.name = opts.path === '-' ? 'stdout' : `jsonl:${opts.path}`;
    if (opts.path !== '-') {
      this.open();
      this.timer = setInterval(() => this.sync(), opts.fsyncIntervalMs);
      this.timer.unref();
    }
  }

  async deliver(batch: readonly RunwatchRecord[]): Promise<DeliveryResult> {
    if (batch.length === 0) return { ok: true };
    const text = batch.map((r) => JSON.stringify(r)).join('\n') + '\n';
    if (this.opts.path === '-') {
      (this.opts.write ?? ((t: string) => process.stdout.write(t)))(text);
      this.written += batch.length;
      return { ok: true };
    }
    try {
      this.reopenIfRotated();
      const buf = Buffer.from(text);
      let off = 0;
      while (off < buf.length) off += writeSync(this.fd!, buf, off);
      this.dirty = true;
      this.written += batch.length;
      return { ok: true };
    } catch (err) {
      return { ok: false, retriable: true, error: `write ${this.opts.path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
    }
  }

  /** Reopen the file (SIGHUP from logrotate). */
  reopen(): void {
    if (this.opts.path === '-') return;
    this.sync();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.open();
  }

  async flush(): Promise<void> {
    this.sync();
  }

  async shutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.sync();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  stats(): Record<string, number> {
    return { written: this.written, lastFsync: this.lastFsync };
  }

  private open(): void {
    mkdirSync(path.dirname(path.resolve(this.opts.path)), { recursive: true });
    this.fd = openSync(this.opts.path, 'a', 0o640);
    this.ino = fstatSync(this.fd).ino;
  }

  private reopenIfRotated(): void {
    let ino = -1;
    try {
      ino = statSync(this.opts.path).ino;
    } catch {
      // Renamed away and not recreated yet: reopen creates it.
    }
    if (ino !== this.ino || this.fd === undefined) {
      this.opts.log.info('records file rotated, reopening', { path: this.opts.path });
      this.reopen();
    }
  }

  private sync(): void {
    if (!this.dirty || this.fd === undefined) return;
    try {
      fsyncSync(this.fd);
      this.dirty = false;
      this.lastFsync = Date.now();
    } catch (err) {
      this.opts.log.warn('fsync failed', { path: this.opts.path, error: String(err) });
    }
  }
}
