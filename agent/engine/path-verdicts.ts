import { randomBytes } from 'node:crypto';

/**
 * What a ruleset's path lists answer, in one table for all of them: (list, path) → allowed or not.
 *
 * The hot path of a decision is "does this profile's list allow this path". With one hash map per list
 * that lookup walked several objects (map, its table, the key strings of a bucket), each a cache miss
 * once there are more lists than the cache holds, and on a VM a miss costs 150–250 ns. Here a lookup
 * reads one 64-byte slot of one typed array: the key's hash, its list, its length and verdict, and its
 * characters packed four to a word, compared in place. Paths are compared in full (never by hash
 * alone: a crafted path must not borrow another's verdict); longer paths, or ones with characters
 * beyond Latin-1, keep their characters in a side array.
 *
 * Holds every literal entry of the lists (allowed, fixed) and remembers the answers of their globs for
 * paths seen before (bounded; forgotten all at once when full).
 */
export class PathVerdictTable {
  private slots = new Int32Array(0);
  private mask = 0;
  private used = 0;
  private literalCount = 0;
  private side: string[] = [];
  private lists = 0;
  private readonly literals: { list: number; path: string }[] = [];
  /** The key the last lookup hashed: its packed characters, and where it would be put. */
  private readonly packed = new Int32Array(INLINE_WORDS);
  private inline = false;
  private lastHash = 0;
  private lastFree = -1;
  private lastProbes = 0;
  private readonly seed: number;

  constructor(
    private readonly rememberLimit = REMEMBER_LIMIT,
    seed = randomBytes(4).readInt32LE(0),
  ) {
    this.seed = seed;
    this.allocate(MIN_SLOTS);
  }

  /** A new list; its id is what the other methods take. */
  newList(): number {
    return ++this.lists;
  }

  /** A literal path the list allows (rules loading: before any lookup). */
  addLiteral(list: number, path: string): void {
    if (this.used > this.literalCount) throw new Error('literal entries are added before lookups');
    this.literals.push({ list, path });
    if (this.lookup(list, path) >= 0) return;
    if ((this.used + 1) * 2 > this.mask + 1) {
      this.grow();
      this.lookup(list, path);
    }
    this.insert(list, path, ALLOWED);
    this.literalCount = this.used;
  }

  /**
   * ALLOWED or DENIED when the table knows (a literal entry, or a glob answer it remembered), else
   * UNKNOWN: the caller asks its globs and may `remember` the answer.
   */
  verdict(list: number, path: string): number {
    const at = this.lookup(list, path);
    return at < 0 ? UNKNOWN : this.slots[at + META] & ALLOWED;
  }

  /** Keeps a glob answer for a path `verdict` did not know (hashed again: this is the rare path). */
  remember(list: number, path: string, allowed: boolean): void {
    if (this.lookup(list, path) >= 0) return;
    if (this.used - this.literalCount >= this.rememberLimit) this.forget();
    else if ((this.used + 1) * 2 > this.mask + 1) this.grow();
    else return this.rememberAtFree(path, list, allowed);
    if (this.lookup(list, path) < 0) this.rememberAtFree(path, list, allowed);
  }

  private rememberAtFree(path: string, list: number, allowed: boolean): void {
    // Paths whose slots are taken far around would make every lookup near them long: not kept (a flood).
    if (this.lastProbes <= MAX_PROBES) this.insert(list, path, allowed ? ALLOWED : DENIED);
  }

  /** Entries held: literal ones and remembered answers. */
  get size(): number {
    return this.used;
  }

  get remembered(): number {
    return this.used - this.literalCount;
  }

  /**
   * The slot offset holding (list, path), or -1; then `lastHash`, `lastFree` (where it would go),
   * `lastProbes` (how far that is from home) and `inline` describe the key for `insert`. Hashing the
   * path (with this table's seed, packing its characters four to a word), probing and comparing are one
   * function: the hottest of a decision (as three, they measured 2–4% slower).
   */
  private lookup(list: number, path: string): number {
    const n = path.length;
    const packed = this.packed;
    let h = Math.imul(this.seed ^ list, 0x9e3779b1) ^ n;
    let wide = 0;
    let k = 0;
    let i = 0;
    for (; i + 3 < n; i += 4, k++) {
      const a = path.charCodeAt(i);
      const b = path.charCodeAt(i + 1);
      const c = path.charCodeAt(i + 2);
      const d = path.charCodeAt(i + 3);
      wide |= a | b | c | d;
      const w = a | (b << 8) | (c << 16) | (d << 24);
      if (k < INLINE_WORDS) packed[k] = w;
      h = Math.imul(h ^ w, 0x5bd1e995);
      h ^= h >>> 13;
    }
    if (i < n) {
      let w = 0;
      for (let shift = 0; i < n; i++, shift += 8) {
        const c = path.charCodeAt(i);
        wide |= c;
        w |= c << shift;
      }
      if (k < INLINE_WORDS) packed[k] = w;
      h = Math.imul(h ^ w, 0x5bd1e995);
      h ^= h >>> 13;
    }
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h ^= h >>> 13;
    if (h === 0) h = 1;
    // Characters beyond Latin-1 overlap when packed four to a word, so such keys are compared as strings.
    const inline = n <= INLINE_CHARS && wide <= 0xff;
    const meta = (n << FLAG_BITS) | (inline ? 0 : SIDE);
    const words = (n + 3) >>> 2;
    const slots = this.slots;
    const mask = this.mask;
    let s = h & mask;
    // At most half the slots are used, so there is an empty one to stop at.
    for (let probe = 0; ; probe++, s = (s + 1) & mask) {
      const at = s * SLOT;
      const slotHash = slots[at];
      if (slotHash === 0) {
        this.lastHash = h;
        this.inline = inline;
        this.lastFree = at;
        this.lastProbes = probe;
        return -1;
      }
      if (slotHash !== h || slots[at + LIST] !== list || (slots[at + META] & ~ALLOWED) !== meta) continue;
      if (!inline) {
        if (this.side[slots[at + KEY]] === path) return at;
        continue;
      }
      let same = true;
      for (let w = 0; w < words; w++) {
        if (slots[at + KEY + w] !== packed[w]) {
          same = false;
          break;
        }
      }
      if (same) return at;
    }
  }

  /** Puts the key the last `lookup` hashed at the free slot it found. */
  private insert(list: number, path: string, verdict: number): void {
    const slots = this.slots;
    const at = this.lastFree;
    slots[at] = this.lastHash;
    slots[at + LIST] = list;
    if (this.inline) {
      slots[at + META] = (path.length << FLAG_BITS) | verdict;
      const words = (path.length + 3) >>> 2;
      for (let k = 0; k < words; k++) slots[at + KEY + k] = this.packed[k];
    } else {
      slots[at + META] = (path.length << FLAG_BITS) | verdict | SIDE;
      slots[at + KEY] = this.side.length;
      this.side.push(path);
    }
    this.used++;
    this.lastFree = -1;
  }

  /** Twice the slots, same entries (slots keep their hash, so nothing is hashed again). */
  private grow(): void {
    const old = this.slots;
    const used = this.used;
    this.allocate((this.mask + 1) * 2);
    for (let at = 0; at < old.length; at += SLOT) {
      if (old[at] === 0) continue;
      let i = old[at] & this.mask;
      while (this.slots[i * SLOT] !== 0) i = (i + 1) & this.mask;
      this.slots.set(old.subarray(at, at + SLOT), i * SLOT);
    }
    this.used = used;
  }

  /** Drops every remembered answer; literal entries stay. */
  private forget(): void {
    const literals = this.literals;
    this.allocate(this.mask + 1);
    this.side = [];
    this.literalCount = 0;
    for (const { list, path } of literals) if (this.lookup(list, path) < 0) this.insert(list, path, ALLOWED);
    this.literalCount = this.used;
  }

  private allocate(slotCount: number): void {
    this.slots = new Int32Array(slotCount * SLOT);
    this.mask = slotCount - 1;
    this.used = 0;
  }
}

export const UNKNOWN = -1;
export const DENIED = 0;
export const ALLOWED = 1;

/** Int32 words per slot: 64 bytes, a cache line's size (most keys are read from one line). */
const SLOT = 16;
const LIST = 1;
const META = 2;
const KEY = 3;
const INLINE_WORDS = SLOT - KEY;
const INLINE_CHARS = INLINE_WORDS * 4;
/** In META below the length: the verdict, and whether the key is in the side array. */
const SIDE = 2;
const FLAG_BITS = 2;
const MIN_SLOTS = 64;

/** How far from its home slot a remembered answer may be put. */
const MAX_PROBES = 32;
/** Remembered glob answers across all lists of a ruleset (the table then holds at most ~4 MiB of slots). */
const REMEMBER_LIMIT = 16_384;
