import { closeSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { RunwatchError } from '../errors.js';
import type { RunwatchRecord } from '../events/types.js';
import type { Logger } from '../log.js';
import { comparePositions, loadCursor, saveCursor, type SpoolCursor, type SpoolPosition } from './spool-cursor.js';

export type { SpoolPosition } from './spool-cursor.js';

/** Records read for one consumer, from one segment, in append order. */
export interface SpoolBatch {
  records: RunwatchRecord[];
  /** Ids among `records` that an earlier attempt may already have delivered (see {@link SpoolCursor.uncertain}). */
  uncertain: ReadonlySet<string>;
  start: SpoolPosition;
  end: SpoolPosition;
}

/** What one append had to evict to stay within the bound. */
export interface SpoolEviction {
  segments: number;
  bytes: number;
  /** Records each consumer lost (had not acknowledged yet). */
  lostByConsumer: Record<string, number>;
}

export interface RecordSpoolOptions {
  dir: string;
  /** Bytes on disk (segment files) never exceed this. */
  maxBytes: number;
  /** Readers that acknowledge independently, one per destination. Cursor files of other names are removed. */
  consumers: readonly string[];
  log: Logger;
  /** Default: maxBytes/16 within [4 KiB, 16 MiB], so eviction frees space in small steps. */
  segmentBytes?: number;
  onEvict?: (eviction: SpoolEviction) => void;
}

interface Segment {
  id: number;
  size: number;
}

const SEGMENT_NAME = /^(\d{20})\.seg$/;
const NEWLINE = 0x0a;

/**
 * Durable, bounded, multi-consumer record spool: JSON lines in numbered segment files under one directory.
 *
 * - `append` writes and fsyncs before returning, so a record the sink accepted survives a crash.
 * - Each consumer reads in order and `commit`s only what its endpoint accepted; its cursor file survives restarts.
 * - Past `maxBytes` the oldest segments are evicted, unacknowledged records counted per consumer.
 * - A line torn by a crash at the tail is cut off on open; an unparseable line elsewhere is skipped and counted.
 */
export class RecordSpool {
  private readonly segments: Segment[] = [];
  private readonly cursors = new Map<string, SpoolCursor>();
  private readonly segmentBytes: number;
  private activeFd: number | undefined;
  private totalBytes = 0;
  private appended: { promise: Promise<void>; resolve: () => void } | undefined;
  readonly counters = { appended: 0, evictedSegments: 0, corruptLines: 0, repairedBytes: 0, skippedAccepted: 0 };
  readonly evictedByConsumer: Record<string, number> = {};

  constructor(private readonly opts: RecordSpoolOptions) {
    this.segmentBytes = opts.segmentBytes ?? Math.min(16 * 1024 * 1024, Math.max(4096, Math.floor(opts.maxBytes / 16)));
    try {
      this.open();
    } catch (err) {
      throw new RunwatchError('RW_SPOOL', `cannot open the spool at ${opts.dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, {}, { cause: err });
    }
  }

  get bytes(): number {
    return this.totalBytes;
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  /** Appends and fsyncs; evicts the oldest segments first when the bound would be exceeded. */
  append(records: readonly RunwatchRecord[]): void {
    if (records.length === 0) return;
    let lines = records.map((r) => Buffer.from(JSON.stringify(r) + '\n'));
    let need = lines.reduce((n, l) => n + l.length, 0);
    // A batch larger than the whole spool keeps its newest records.
    let oversize = 0;
    while (need > this.opts.maxBytes) {
      need -= lines[oversize++].length;
    }
    if (oversize) lines = lines.slice(oversize);
    let eviction = this.makeRoom(need);
    if (oversize) {
      eviction ??= { segments: 0, bytes: 0, lostByConsumer: {} };
      for (const c of this.opts.consumers) eviction.lostByConsumer[c] = (eviction.lostByConsumer[c] ?? 0) + oversize;
      for (const c of this.opts.consumers) this.evictedByConsumer[c] = (this.evictedByConsumer[c] ?? 0) + oversize;
    }
    try {
      let active = this.active();
      let chunk: Buffer[] = [];
      let chunkBytes = 0;
      for (const line of lines) {
        if (active.size + chunkBytes > 0 && active.size + chunkBytes + line.length > this.segmentBytes) {
          this.writeAll(Buffer.concat(chunk, chunkBytes));
          fsyncSync(this.activeFd!);
          active.size += chunkBytes;
          active = this.rotate();
          chunk = [];
          chunkBytes = 0;
        }
        chunk.push(line);
        chunkBytes += line.length;
      }
      this.writeAll(Buffer.concat(chunk, chunkBytes));
      fsyncSync(this.activeFd!);
      active.size += chunkBytes;
    } catch (err) {
      // Never leave half a line behind: cut the active segment back to its last complete append.
      try {
        ftruncateSync(this.activeFd!, this.active().size);
      } catch {
        // The next open cuts a torn tail anyway.
      }
      throw new RunwatchError('RW_SPOOL', `spool write failed: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, {}, { cause: err });
    } finally {
      this.totalBytes = this.segments.reduce((n, s) => n + s.size, 0);
    }
    this.counters.appended += lines.length;
    if (eviction) this.opts.onEvict?.(eviction);
    this.wakeReaders();
  }

  /** Resolves at the next append (or close); every caller shares one promise. */
  whenAppended(): Promise<void> {
    if (!this.appended) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.appended = { promise, resolve };
    }
    return this.appended.promise;
  }

  /**
   * The next records for `consumer` (at most `maxRecords`, about `maxBytes`), without the ones it already
   * had accepted; undefined when it has read everything.
   */
  read(consumer: string, maxRecords: number, maxBytes: number): SpoolBatch | undefined {
    for (;;) {
      const cursor = this.cursor(consumer);
      const pos = cursor.position;
      const seg = this.segments.find((s) => s.id === pos.segment);
      if (!seg) return undefined;
      if (pos.offset >= seg.size) {
        if (seg === this.segments.at(-1)) return undefined;
        this.advance(consumer, { segment: this.segments[this.segments.indexOf(seg) + 1].id, offset: 0 });
        continue;
      }
      const { lines, consumed } = this.readLines(seg, pos.offset, maxRecords, maxBytes);
      const end = { segment: seg.id, offset: pos.offset + consumed };
      const accepted = new Set(cursor.accepted);
      const uncertain = new Set(cursor.uncertain);
      const records: RunwatchRecord[] = [];
      for (const line of lines) {
        let rec: RunwatchRecord;
        try {
          rec = JSON.parse(line) as RunwatchRecord;
        } catch {
          this.counters.corruptLines++;
          continue;
        }
        if (accepted.has(rec.id)) this.counters.skippedAccepted++;
        else records.push(rec);
      }
      if (records.length === 0) {
        this.advance(consumer, end);
        continue;
      }
      return { records, uncertain: new Set(records.filter((r) => uncertain.has(r.id)).map((r) => r.id)), start: { ...pos }, end };
    }
  }

  /** Notes progress inside the batch being delivered, so a restart neither resends accepted records nor forgets possible duplicates. */
  markProgress(consumer: string, batch: SpoolBatch, progress: { accepted: readonly string[]; uncertain: readonly string[] }): void {
    const cursor = this.cursor(consumer);
    if (comparePositions(cursor.position, batch.start) !== 0) return;
    cursor.accepted = [...progress.accepted];
    cursor.uncertain = [...progress.uncertain];
    saveCursor(this.opts.dir, consumer, cursor);
  }

  /** Acknowledges everything up to `end`. A stale position (its segment was evicted meanwhile) is ignored. */
  commit(consumer: string, end: SpoolPosition): void {
    if (comparePositions(end, this.cursor(consumer).position) < 0) return;
    this.advance(consumer, end);
  }

  /** Whether `batch` is still the consumer's next one (eviction may have skipped past it). */
  holds(consumer: string, batch: SpoolBatch): boolean {
    return comparePositions(this.cursor(consumer).position, batch.start) === 0 && this.segments.some((s) => s.id === batch.start.segment);
  }

  /** Bytes not yet acknowledged by `consumer`. */
  backlogBytes(consumer: string): number {
    const pos = this.cursor(consumer).position;
    return this.segments.reduce((n, s) => n + (s.id > pos.segment ? s.size : s.id === pos.segment ? s.size - pos.offset : 0), 0);
  }

  close(): void {
    if (this.activeFd !== undefined) closeSync(this.activeFd);
    this.activeFd = undefined;
    this.wakeReaders();
  }

  private wakeReaders(): void {
    const a = this.appended;
    this.appended = undefined;
    a?.resolve();
  }

  private open(): void {
    const { dir } = this.opts;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(dir)) {
      const m = SEGMENT_NAME.exec(name);
      if (m) this.segments.push({ id: Number(m[1]), size: 0 });
      else if (name.endsWith('.cursor') && !this.opts.consumers.includes(name.slice(0, -'.cursor'.length))) unlinkSync(path.join(dir, name));
    }
    this.segments.sort((a, b) => a.id - b.id);
    const last = this.segments.at(-1);
    for (const seg of this.segments) {
      const fd = openSync(this.segmentPath(seg.id), seg === last ? 'r+' : 'r');
      try {
        seg.size = fstatSync(fd).size;
        if (seg === last) this.repairTail(fd, seg);
      } finally {
        closeSync(fd);
      }
    }
    if (!last || last.size >= this.segmentBytes) this.rotate();
    else this.activeFd = openSync(this.segmentPath(last.id), 'a');
    this.totalBytes = this.segments.reduce((n, s) => n + s.size, 0);
    for (const consumer of this.opts.consumers) {
      const saved = loadCursor(dir, consumer);
      const first = this.segments[0];
      let cursor: SpoolCursor = saved ?? { position: { segment: first.id, offset: 0 }, accepted: [], uncertain: [] };
      const seg = this.segments.find((s) => s.id === cursor.position.segment);
      if (!seg || cursor.position.offset > seg.size) {
        // Its segment is gone (evicted, or removed by hand): continue at the next one that exists; resending beats losing.
        const next = this.segments.find((s) => s.id > cursor.position.segment) ?? first;
        if (saved)
          this.opts.log.warn('spool cursor points past the spool, resuming at the next segment', {
            consumer,
            segment: saved.position.segment,
            offset: saved.position.offset,
          });
        cursor = { position: { segment: next.id, offset: 0 }, accepted: [], uncertain: [] };
      }
      this.cursors.set(consumer, cursor);
    }
  }

  /** Cuts a line left incomplete by a crash mid-write. */
  private repairTail(fd: number, seg: Segment): void {
    if (seg.size === 0) return;
    const buf = Buffer.alloc(Math.min(seg.size, 1024 * 1024));
    let end = seg.size;
    while (end > 0) {
      const from = Math.max(0, end - buf.length);
      const n = readSync(fd, buf, 0, end - from, from);
      const nl = buf.subarray(0, n).lastIndexOf(NEWLINE);
      if (nl >= 0) {
        end = from + nl + 1;
        break;
      }
      end = from;
    }
    if (end < seg.size) {
      ftruncateSync(fd, end);
      this.counters.repairedBytes += seg.size - end;
      this.opts.log.warn('spool segment had a torn last line, cut it', { segment: seg.id, bytes: seg.size - end });
      seg.size = end;
    }
  }

  private readLines(seg: Segment, offset: number, maxRecords: number, maxBytes: number): { lines: string[]; consumed: number } {
    const fd = openSync(this.segmentPath(seg.id), 'r');
    try {
      let want = Math.min(seg.size - offset, maxBytes);
      for (;;) {
        const buf = Buffer.allocUnsafe(want);
        const n = readSync(fd, buf, 0, want, offset);
        const lines: string[] = [];
        let start = 0;
        while (lines.length < maxRecords) {
          const nl = buf.indexOf(NEWLINE, start);
          if (nl < 0 || nl >= n) break;
          lines.push(buf.toString('utf8', start, nl));
          start = nl + 1;
        }
        if (lines.length === 0) {
          // One line longer than maxBytes: read on until its end.
          if (offset + want < seg.size) {
            want = Math.min(seg.size - offset, want * 2);
            continue;
          }
          // No newline up to the end of a sealed segment: an unterminated line, skip it.
          this.counters.corruptLines++;
          return { lines, consumed: seg.size - offset };
        }
        return { lines, consumed: start };
      }
    } finally {
      closeSync(fd);
    }
  }

  private makeRoom(need: number): SpoolEviction | undefined {
    let eviction: SpoolEviction | undefined;
    while (this.totalBytes + need > this.opts.maxBytes && this.segments.length) {
      const oldest = this.segments[0];
      if (oldest === this.active()) {
        if (oldest.size === 0) break;
        this.rotate();
      }
      eviction ??= { segments: 0, bytes: 0, lostByConsumer: {} };
      this.evict(oldest, eviction);
    }
    return eviction;
  }

  private evict(seg: Segment, eviction: SpoolEviction): void {
    const next = this.segments[1];
    for (const consumer of this.opts.consumers) {
      const cursor = this.cursor(consumer);
      if (cursor.position.segment > seg.id) continue;
      const lost =
        this.countLines(seg, cursor.position.segment === seg.id ? cursor.position.offset : 0) -
        (cursor.position.segment === seg.id ? cursor.accepted.length : 0);
      eviction.lostByConsumer[consumer] = (eviction.lostByConsumer[consumer] ?? 0) + lost;
      this.evictedByConsumer[consumer] = (this.evictedByConsumer[consumer] ?? 0) + lost;
      this.cursors.set(consumer, { position: { segment: next.id, offset: 0 }, accepted: [], uncertain: [] });
      saveCursor(this.opts.dir, consumer, this.cursor(consumer));
    }
    unlinkSync(this.segmentPath(seg.id));
    this.segments.shift();
    this.totalBytes -= seg.size;
    eviction.segments++;
    eviction.bytes += seg.size;
    this.counters.evictedSegments++;
  }

  private countLines(seg: Segment, from: number): number {
    let count = 0;
    const fd = openSync(this.segmentPath(seg.id), 'r');
    try {
      const buf = Buffer.alloc(1024 * 1024);
      for (let off = from; off < seg.size;) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, seg.size - off), off);
        if (n <= 0) break;
        for (let i = buf.indexOf(NEWLINE); i >= 0 && i < n; i = buf.indexOf(NEWLINE, i + 1)) count++;
        off += n;
      }
    } finally {
      closeSync(fd);
    }
    return count;
  }

  private advance(consumer: string, to: SpoolPosition): void {
    this.cursors.set(consumer, { position: { ...to }, accepted: [], uncertain: [] });
    saveCursor(this.opts.dir, consumer, this.cursor(consumer));
    // Segments every consumer has moved past are done.
    const low = Math.min(...this.opts.consumers.map((c) => this.cursor(c).position.segment));
    while (this.segments.length > 1 && this.segments[0].id < low) {
      const seg = this.segments.shift()!;
      unlinkSync(this.segmentPath(seg.id));
      this.totalBytes -= seg.size;
    }
  }

  private active(): Segment {
    return this.segments.at(-1)!;
  }

  private rotate(): Segment {
    if (this.activeFd !== undefined) closeSync(this.activeFd);
    const seg = { id: (this.segments.at(-1)?.id ?? 0) + 1, size: 0 };
    this.activeFd = openSync(this.segmentPath(seg.id), 'a', 0o600);
    this.segments.push(seg);
    // The new file's directory entry must be durable before records in it are acknowledged to the pipeline.
    const dirFd = openSync(this.opts.dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
    return seg;
  }

  private writeAll(buf: Buffer): void {
    for (let off = 0; off < buf.length;) off += writeSync(this.activeFd!, buf, off);
  }

  private cursor(consumer: string): SpoolCursor {
    const c = this.cursors.get(consumer);
    if (!c) throw new RunwatchError('RW_SPOOL', `unknown spool consumer ${consumer}`);
    return c;
  }

  private segmentPath(id: number): string {
    return path.join(this.opts.dir, `${String(id).padStart(20, '0')}.seg`);
  }
}
