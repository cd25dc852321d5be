import { Minimatch } from 'minimatch';

/** Where an allow entry came from, for `rules explain` and for messages. */
export interface EntryOrigin {
  /** The profile that wrote the entry (a parent when inherited through `extends`). */
  profile: string;
  file: string;
  line: number;
  /** The entry as written. */
  entry: string;
}

export const GLOB_OPTIONS = { dot: true, nonegate: true, nocomment: true } as const;

/**
 * Why a glob is rejected, or undefined when it is fine. minimatch takes almost anything literally
 * (an unclosed "[" just matches "["), which hides typos, so the checks here are stricter.
 */
export function globProblem(pattern: string, opts: { absolute: boolean }): string | undefined {
  if (pattern.trim() !== pattern || pattern === '') return 'empty or padded with spaces';
  if (/[\0\n\r]/.test(pattern)) return 'holds a control character';
  if (pattern.startsWith('!')) return 'negation ("!") is not supported; list only what is allowed';
  if (opts.absolute && !pattern.startsWith('/')) return 'must be an absolute path starting with "/"';
  if (opts.absolute && /(^|\/)\.\.?(\/|$)/.test(pattern)) return 'must not contain "." or ".." segments';
  let square = false;
  let braces = 0;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === '\\') {
      i++;
      continue;
    }
    if (square) {
      if (ch === ']' && pattern[i - 1] !== '[' && !(pattern[i - 1] === '!' && pattern[i - 2] === '[')) square = false;
      continue;
    }
    if (ch === '[') square = true;
    else if (ch === ']') return 'has a "]" without its "["';
    else if (ch === '{') braces++;
    else if (ch === '}' && --braces < 0) return 'has a "}" without its "{"';
  }
  if (square) return 'has a "[" that is never closed';
  if (braces > 0) return 'has a "{" that is never closed';
  if (new Minimatch(pattern, GLOB_OPTIONS).makeRe() === false) return 'is not a valid glob';
  return undefined;
}

/** True when the pattern expands to literal strings only (no *, ?, [ ]); braces expand to several. */
function literalExpansions(pattern: string): string[] | undefined {
  const mm = new Minimatch(pattern, GLOB_OPTIONS);
  const out: string[] = [];
  for (const parts of mm.set) {
    if (!parts.every((p) => typeof p === 'string')) return undefined;
    out.push((parts as string[]).join('/'));
  }
  return out;
}

/** A glob compiled once: exact alternatives as strings, the rest as one RegExp. */
export function compileGlob(pattern: string): { exact?: string[]; re?: RegExp } {
  const exact = literalExpansions(pattern);
  if (exact) return { exact };
  const re = new Minimatch(pattern, GLOB_OPTIONS).makeRe();
  if (re === false) throw new Error(`invalid glob ${pattern}`);
  return { re };
}

/**
 * A list of path globs compiled for speed: literal paths go into a Set, every other glob into one
 * alternation RegExp, so a decision is one hash lookup and at most one regex run.
 */
export class PathMatcher {
  private readonly exact = new Map<string, EntryOrigin>();
  private readonly globs: { re: RegExp; origin: EntryOrigin }[] = [];
  /** One alternation per set of RegExp flags (POSIX classes like [[:alpha:]] need "u"); usually one. */
  private readonly combined: RegExp[] = [];

  constructor(entries: readonly EntryOrigin[]) {
    const byFlags = new Map<string, string[]>();
    for (const origin of entries) {
      const c = compileGlob(origin.entry);
      if (c.exact) for (const p of c.exact) if (!this.exact.has(p)) this.exact.set(p, origin);
      if (c.re) {
        this.globs.push({ re: c.re, origin });
        const list = byFlags.get(c.re.flags) ?? [];
        list.push(c.re.source);
        byFlags.set(c.re.flags, list);
      }
    }
    // Each minimatch RegExp is anchored (^…$), so joining them keeps every one's meaning.
    for (const [flags, sources] of byFlags) this.combined.push(new RegExp(sources.length === 1 ? sources[0] : sources.map((s) => `(?:${s})`).join('|'), flags));
  }

  get size(): number {
    return this.exact.size + this.globs.length;
  }

  matches(path: string): boolean {
    if (this.exact.has(path)) return true;
    for (let i = 0; i < this.combined.length; i++) if (this.combined[i].test(path)) return true;
    return false;
  }

  /** The entry that allows `path` (slow path, for explanations). */
  explain(path: string): EntryOrigin | undefined {
    return this.exact.get(path) ?? this.globs.find((g) => g.re.test(path))?.origin;
  }
}
