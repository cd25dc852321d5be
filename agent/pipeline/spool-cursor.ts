import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** A place in the spool: segment number and byte offset of the next unread line. */
export interface SpoolPosition {
  segment: number;
  offset: number;
}

/**
 * One consumer's acknowledgement state. `accepted` and `uncertain` only ever name records of the batch
 * being delivered (past `position`): they are cleared when the batch is committed.
 */
export interface SpoolCursor {
  position: SpoolPosition;
  /** Ids the endpoint already accepted (partial success), so a restart does not send them again. */
  accepted: string[];
  /** Ids sent in a request whose answer never came (timeout, reset, crash): they may be at the endpoint already. */
  uncertain: string[];
}

export function comparePositions(a: SpoolPosition, b: SpoolPosition): number {
  return a.segment - b.segment || a.offset - b.offset;
}

function cursorFile(dir: string, consumer: string): string {
  return path.join(dir, `${consumer}.cursor`);
}

/** The saved cursor, or undefined when there is none or it cannot be read (the caller then starts from the oldest record). */
export function loadCursor(dir: string, consumer: string): SpoolCursor | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(cursorFile(dir, consumer), 'utf8'));
  } catch {
    return undefined;
  }
  const c = raw as Partial<{ v: number; segment: number; offset: number; accepted: unknown; uncertain: unknown }>;
  if (c.v !== 1 || !Number.isSafeInteger(c.segment) || !Number.isSafeInteger(c.offset)) return undefined;
  const ids = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  return { position: { segment: c.segment!, offset: c.offset! }, accepted: ids(c.accepted), uncertain: ids(c.uncertain) };
}

/**
 * Written with rename, without fsync: a cursor that lags after a power cut only makes records go out again
 * (counted as possible duplicates), it never loses one.
 */
export function saveCursor(dir: string, consumer: string, cursor: SpoolCursor): void {
  const file = cursorFile(dir, consumer);
  const tmp = `${file}.tmp`;
  const { position, accepted, uncertain } = cursor;
  writeFileSync(tmp, JSON.stringify({ v: 1, segment: position.segment, offset: position.offset, accepted, uncertain }), { mode: 0o600 });
  renameSync(tmp, file);
}
