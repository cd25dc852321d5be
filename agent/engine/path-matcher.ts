import { braceExpand, GLOBSTAR, Minimatch } from 'minimatch';
import { ALLOWED, UNKNOWN, type PathVerdictTable } from './path-verdicts.js';

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
  let square = false;
  let braces = 0;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === '\\') {
      i++;
      continue;
    }
    if (square) {
      if (ch === '[' && pattern[i + 1] === ':') {
        // A POSIX class ("[:alpha:]") inside a bracket expression.
        const end = pattern.indexOf(':]', i + 2);
        if (end > 0) i = end + 1;
      } else if (ch === ']' && pattern[i - 1] !== '[' && !(pattern[i - 1] === '!' && pattern[i - 2] === '[')) square = false;
      continue;
    }
    if (ch === '[') square = true;
    else if (ch === ']') return 'has a "]" without its "["';
    else if (ch === '{') braces++;
    else if (ch === '}' && --braces < 0) return 'has a "}" without its "{"';
  }
  if (square) return 'has a "[" that is never closed';
  if (braces > 0) return 'has a "{" that is never closed';
  if (opts.absolute) {
    // Braces may choose the leading folder ("{/usr,}/bin/sh"): every expansion has to be absolute.
    const expansions = braceExpand(pattern);
    if (!expansions.every((e) => e.startsWith('/'))) return 'must be an absolute path starting with "/"';
    if (expansions.some((e) => /(^|\/)\.\.?(\/|$)/.test(e))) return 'must not contain "." or ".." segments';
  }
  if (compileGlob(pattern).invalid) return 'is not a valid glob';
  return undefined;
}

export interface CompiledGlob {
  /** Expansions without any wildcard ("/bin/{sh,dash}" gives two literal paths). */
  exact: string[];
  /** Expansions with wildcards, each as its own RegExp. */
  parts: RegExp[];
  /** The whole pattern as one RegExp (explanations, multi-call entries). */
  re?: RegExp;
  invalid?: boolean;
}

// Compiling a glob is the dominant cost of loading large rulesets, and reloads see the same globs again.
const compiled = new Map<string, CompiledGlob>();
const COMPILED_LIMIT = 100_000;

/** A literal path as a glob that matches only itself: every glob character escaped, braces too. */
export function escapeGlob(path: string): string {
  return path.replace(/[\\*?[\]{}()!+@]/g, '\\$&');
}

/** One brace expansion of a parsed glob, back as glob text (minimatch's own expansions lose escapes). */
function expansionGlob(parts: readonly (string | RegExp | typeof GLOBSTAR)[]): string {
  return parts.map((p) => (typeof p === 'string' ? escapeGlob(p) : p === GLOBSTAR ? '**' : (p as RegExp & { _glob: string })._glob)).join('/');
}

/** A glob compiled once (memoised): literal brace expansions as strings, the others as one RegExp each. */
export function compileGlob(pattern: string): CompiledGlob {
  let c = compiled.get(pattern);
  if (c) return c;
  c = { exact: [], parts: [] };
  const mm = new Minimatch(pattern, GLOB_OPTIONS);
  const whole = mm.makeRe();
  if (whole === false) c.invalid = true;
  else {
    for (const parts of mm.set) {
      if (parts.every((p) => typeof p === 'string')) {
        c.exact.push((parts as string[]).join('/'));
        continue;
      }
      const re = new Minimatch(expansionGlob(parts), GLOB_OPTIONS).makeRe();
      if (re === false) {
        c.invalid = true;
        break;
      }
      c.parts.push(re);
    }
    if (c.parts.length) c.re = whole;
  }
  if (compiled.size >= COMPILED_LIMIT) compiled.clear();
  compiled.set(pattern, c);
  return c;
}

// minimatch guards every wildcard against matching "." and ".." folder levels. Paths the sensors report
// are canonical (no such levels), so the guards only cost time; they are dropped from the joined RegExp.
const DOT_GUARDS: [string, string][] = [
  ['(?!(?:^|\\/)\\.\\.?(?:$|\\/))', ''],
  ['(?:(?!(?:\\/|^)(?:\\.{1,2})($|\\/)).)*?', '.*?'],
];

function withoutDotGuards(source: string): string {
  let out = source;
  for (const [guard, plain] of DOT_GUARDS) out = out.split(guard).join(plain);
  return out;
}

function joinAlternatives(res: readonly RegExp[]): RegExp[] {
  const byFlags = new Map<string, string[]>();
  for (const re of res) byFlags.set(re.flags, [...(byFlags.get(re.flags) ?? []), withoutDotGuards(re.source)]);
  return [...byFlags].map(([flags, sources]) => new RegExp(`^${prefixTrie(sources)}`, flags));
}

interface TrieNode {
  children: Map<string, TrieNode>;
  /** What follows the literal prefix, for alternatives whose prefix ends here. */
  rests: string[];
}

/**
 * Joins anchored RegExp sources ("^…$") into one alternation whose literal prefixes are shared, so
 * "/opt/app/a/*" and "/opt/app/b/*" compare "/opt/app/" once: V8 tries alternatives one by one and would
 * otherwise compare the common prefix again for each.
 */
export function prefixTrie(sources: readonly string[]): string {
  const root: TrieNode = { children: new Map(), rests: [] };
  for (const src of sources) {
    const { tokens, rest } = literalTokens(src.startsWith('^') ? src.slice(1) : src);
    let node = root;
    for (const t of tokens) {
      let next = node.children.get(t);
      if (!next) node.children.set(t, (next = { children: new Map(), rests: [] }));
      node = next;
    }
    node.rests.push(rest);
  }
  return emit(root);
}

const QUANTIFIERS = new Set(['*', '+', '?', '{']);
const SPECIAL = new Set(['(', ')', '[', ']', '{', '}', '.', '*', '+', '?', '^', '$', '|', '\\']);

/** The leading literal characters of a RegExp source (escaped punctuation or plain characters), one token each. */
function literalTokens(body: string): { tokens: string[]; rest: string } {
  const tokens: string[] = [];
  let i = 0;
  while (i < body.length) {
    let token: string;
    if (body[i] === '\\') {
      // Only escaped punctuation is a literal; \d, \w, \b … are classes or assertions.
      if (i + 1 >= body.length || /[A-Za-z0-9]/.test(body[i + 1])) break;
      token = body.slice(i, i + 2);
    } else if (SPECIAL.has(body[i])) break;
    else token = body[i];
    if (QUANTIFIERS.has(body[i + token.length] ?? '')) break;
    tokens.push(token);
    i += token.length;
  }
  return { tokens, rest: body.slice(i) };
}

function emit(node: TrieNode): string {
  const alternatives = [...[...node.children].map(([token, child]) => token + emit(child)), ...node.rests];
  return alternatives.length === 1 ? alternatives[0] : `(?:${alternatives.join('|')})`;
}

const GLOB_VERDICTS = 1024;
const MAX_REMEMBERED_PATH = 1024;

/**
 * A list of path globs compiled for speed: literal paths go into a Set, every wildcard glob into one
 * RegExp with shared prefixes, so a decision is one hash lookup and at most one RegExp run. The lists
 * decisions read most (process.allow, files.write) share a ruleset's PathVerdictTable instead, which
 * holds their literal paths and remembered glob answers in fewer cache lines.
 */
export class PathMatcher {
  private readonly exact = new Map<string, EntryOrigin>();
  private readonly globs: { re: RegExp; origin: EntryOrigin }[] = [];
  /** One RegExp per set of flags (POSIX classes like [[:alpha:]] need "u"); usually one or none. */
  private readonly combined: RegExp[];
  /** The RegExps' answers for recently seen paths (bounded): containers use the same paths over and over. */
  private readonly globVerdicts = new Map<string, boolean>();
  private readonly table: PathVerdictTable | undefined;
  private readonly list: number;

  constructor(entries: readonly EntryOrigin[], table?: PathVerdictTable) {
    const res: RegExp[] = [];
    for (const origin of entries) {
      const c = compileGlob(origin.entry);
      if (c.invalid) throw new Error(`invalid glob ${origin.entry}`);
      for (const p of c.exact) if (!this.exact.has(p)) this.exact.set(p, origin);
      if (c.re) this.globs.push({ re: c.re, origin });
      res.push(...c.parts);
    }
    this.combined = joinAlternatives(res);
    this.table = table;
    this.list = table ? table.newList() : 0;
    if (table) for (const p of this.exact.keys()) table.addLiteral(this.list, p);
  }

  get size(): number {
    return this.exact.size + this.globs.length;
  }

  matches(path: string): boolean {
    const table = this.table;
    if (table !== undefined) {
      const known = table.verdict(this.list, path);
      if (known !== UNKNOWN) return known === ALLOWED;
      if (this.combined.length === 0) return false;
      const matched = this.testGlobs(path);
      if (path.length <= MAX_REMEMBERED_PATH) table.remember(this.list, path, matched);
      return matched;
    }
    if (this.exact.has(path)) return true;
    if (this.combined.length === 0) return false;
    // The path's hash was just computed for the Set, so a second lookup is cheaper than the RegExp.
    const known = this.globVerdicts.get(path);
    if (known !== undefined) return known;
    const matched = this.testGlobs(path);
    if (path.length <= MAX_REMEMBERED_PATH) {
      if (this.globVerdicts.size >= GLOB_VERDICTS) this.globVerdicts.clear();
      this.globVerdicts.set(path, matched);
    }
    return matched;
  }

  private testGlobs(path: string): boolean {
    for (let i = 0; i < this.combined.length; i++) if (this.combined[i].test(path)) return true;
    return false;
  }

  /** The entry that allows `path` (slow path, for explanations). */
  explain(path: string): EntryOrigin | undefined {
    return this.exact.get(path) ?? this.globs.find((g) => g.re.test(path))?.origin;
  }
}
