import { braceExpand, Minimatch } from 'minimatch';
import type { FieldPath } from '../config/yaml-source.js';
import type { ErrorCode } from '../errors.js';
import type { ContainerInfo, DockerActionEvent, FileChangeEvent, Finding, NetSocketEvent, ProcessExecEvent, Severity } from '../events/types.js';
import { normaliseImagePattern, parseImageRef } from './image-ref.js';
import { globProblem, PathMatcher } from './path-matcher.js';
import type { DetectionDoc } from './rule-schema.js';

/*
 * Detection rules: known-bad behaviour checked in every container, profiled or not. A condition is a
 * small tree ({ all }, { any }, { not }, or a mapping of field → globs / boolean) compiled once into
 * closures over lazily computed, memoised event facts.
 */

export type DetectionEvent = ProcessExecEvent | FileChangeEvent | NetSocketEvent | DockerActionEvent;
export type DetectionEventKind = DetectionEvent['kind'];
type FieldValue = string | readonly string[] | boolean;
type FieldType = 'path' | 'text' | 'bool';

interface FieldSpec {
  on: DetectionEventKind;
  type: FieldType;
  what: string;
  get(ev: DetectionEvent): FieldValue;
  /** A text field holding every value of this multi-valued one as a substring (a cheap first check). */
  joined?: string;
}

function field<K extends DetectionEventKind>(on: K, type: FieldType, what: string, get: (ev: Extract<DetectionEvent, { kind: K }>) => FieldValue): FieldSpec {
  return { on, type, what, get: get as (ev: DetectionEvent) => FieldValue };
}

function basename(p: string): string {
  const i = p.lastIndexOf('/');
  return i >= 0 ? p.slice(i + 1) : p;
}

const MULTI_CALL = new Set(['busybox', 'toybox']);

/** Every name a process goes by: the executable's base name, argv[0]'s (a busybox applet, a renamed link) and comm. */
function processNames(ev: ProcessExecEvent): string[] {
  const exeName = basename(ev.exe ?? '');
  const args = ev.args ?? [];
  let name = basename(ev.argv0 ?? args[0] ?? '');
  if (name.charCodeAt(0) === 45 /* "-": login shell */) name = name.slice(1);
  if (name === exeName && MULTI_CALL.has(exeName) && args.length > 1) name = basename(args[1]);
  const out = [exeName];
  if (name && name !== exeName) out.push(name);
  if (ev.comm && ev.comm !== exeName && ev.comm !== name) out.push(ev.comm);
  return out;
}

function ancestorNames(a: { exe: string; comm?: string }): string[] {
  const exeName = basename(a.exe);
  return a.comm && a.comm !== exeName ? [exeName, a.comm] : [exeName];
}

/** Symlink targets may be relative to the link's folder. */
function absoluteTarget(ev: FileChangeEvent): string {
  const t = ev.linkTarget;
  if (!t) return '';
  if (t.startsWith('/')) return t;
  const parts = ev.path.split('/').slice(0, -1);
  for (const seg of t.split('/')) {
    if (seg === '..') {
      if (parts.length > 1) parts.pop();
    } else if (seg !== '.' && seg !== '') parts.push(seg);
  }
  return parts.join('/') || '/';
}

function port(endpoint: string | undefined): string {
  if (!endpoint) return '';
  const i = endpoint.lastIndexOf(':');
  return i >= 0 ? endpoint.slice(i + 1) : '';
}

function host(endpoint: string | undefined): string {
  if (!endpoint) return '';
  const i = endpoint.lastIndexOf(':');
  const h = i >= 0 ? endpoint.slice(0, i) : endpoint;
  return h.startsWith('[') ? h.slice(1, -1) : h;
}

function words(command: string | undefined): string[] {
  return command ? command.trim().split(/\s+/) : [];
}

const SETID_BITS = 0o6000;

/** The fields a condition can test, each for one event kind. Multi-valued fields match when any value does. */
export const DETECTION_FIELDS = {
  'proc.exe': field('process_exec', 'path', 'absolute executable path', (e) => e.exe ?? ''),
  'proc.name': field('process_exec', 'text', 'every name of the process: exe base name, argv[0] base name (busybox applet), comm', processNames),
  'proc.argv0': field('process_exec', 'text', 'argv[0] as given', (e) => e.argv0 ?? e.args?.[0] ?? ''),
  'proc.comm': field('process_exec', 'text', 'kernel task name', (e) => e.comm ?? ''),
  'proc.args': { ...field('process_exec', 'text', 'each argument after argv[0]', (e) => (e.args ?? []).slice(1)), joined: 'proc.cmdline' },
  'proc.cmdline': field('process_exec', 'text', 'argv joined by spaces', (e) => (e.args ?? []).join(' ')),
  'proc.uid': field('process_exec', 'text', 'uid as a decimal number', (e) => String(e.uid)),
  'proc.tty': field('process_exec', 'bool', 'the process has a controlling terminal', (e) => !!e.tty),
  'proc.stdioSocket': field('process_exec', 'bool', 'fd 0 or 1 is a network socket', (e) => e.stdioSocket === true),
  'proc.inUpperLayer': field('process_exec', 'bool', "the executable is in the container's writable layer", (e) => e.inUpperLayer === true),
  'proc.exeDeleted': field('process_exec', 'bool', 'the executable was deleted or is a memfd', (e) => e.exeDeleted === true),
  'proc.cwd': field('process_exec', 'path', 'working folder', (e) => e.cwd ?? ''),
  'parent.name': field('process_exec', 'text', "the parent's names (exe base name, comm)", (e) => (e.ancestors?.[0] ? ancestorNames(e.ancestors[0]) : [])),
  'parent.exe': field('process_exec', 'path', "the parent's executable", (e) => e.ancestors?.[0]?.exe ?? ''),
  'ancestor.name': field('process_exec', 'text', 'names of every ancestor', (e) => (e.ancestors ?? []).flatMap(ancestorNames)),
  'ancestor.exe': field('process_exec', 'path', 'executables of every ancestor', (e) => (e.ancestors ?? []).map((a) => a.exe)),
  'file.path': field('file_change', 'path', 'absolute path', (e) => e.path ?? ''),
  'file.op': field('file_change', 'text', 'create, modify, delete or chmod', (e) => e.op ?? ''),
  'file.setid': field(
    'file_change',
    'bool',
    'a setuid or setgid bit is set that was not before',
    (e) => e.mode !== undefined && (e.mode & SETID_BITS & ~(e.previousMode ?? 0)) !== 0,
  ),
  'file.linkTarget': field('file_change', 'path', 'the symlink target (made absolute) or another path of a hard-linked file', absoluteTarget),
  'file.hardLink': field('file_change', 'bool', 'the file has more than one hard link', (e) => (e.nlink ?? 1) > 1),
  'file.proc.exe': field('file_change', 'path', 'executable of the process running in the container, when known', (e) => e.process?.exe ?? ''),
  'net.direction': field('net_socket', 'text', 'listen or connect', (e) => e.direction ?? ''),
  'net.protocol': field('net_socket', 'text', 'tcp, tcp6, udp or udp6', (e) => e.protocol ?? ''),
  'net.port': field('net_socket', 'text', 'remote port for connect, local port for listen', (e) => port(e.direction === 'listen' ? e.local : e.remote)),
  'net.remote': field('net_socket', 'text', 'remote address (no port, IPv6 without brackets)', (e) => host(e.remote)),
  'net.local': field('net_socket', 'text', 'local address (no port)', (e) => host(e.local)),
  'docker.action': field('docker_action', 'text', "Docker's action, e.g. exec_start", (e) => e.action ?? ''),
  'docker.command': field('docker_action', 'text', 'the exec command line', (e) => e.command ?? ''),
  'docker.program': field('docker_action', 'text', "base name of the exec command's first word", (e) => basename(words(e.command)[0] ?? '')),
  'docker.args': {
    ...field('docker_action', 'text', 'each word of the exec command after the first', (e) => words(e.command).slice(1)),
    joined: 'docker.command',
  },
} satisfies Record<string, FieldSpec>;

export type DetectionField = keyof typeof DETECTION_FIELDS;
const FIELD_NAMES = Object.keys(DETECTION_FIELDS) as DetectionField[];
const FIELD_SPECS: FieldSpec[] = FIELD_NAMES.map((n) => DETECTION_FIELDS[n]);
const FIELD_INDEX = new Map(FIELD_NAMES.map((n, i) => [n as string, i]));

/**
 * One event's field values, computed on first use and shared by every detection. A DetectionSet keeps
 * one and restamps it per event: allocating and filling a fresh cache cost more than most detections.
 */
class EventFacts {
  private ev: DetectionEvent | undefined;
  private stamp = 0;
  private readonly stamps = new Uint32Array(FIELD_SPECS.length);
  private readonly values: FieldValue[] = FIELD_SPECS.map(() => '');

  reset(ev: DetectionEvent): void {
    this.ev = ev;
    if (++this.stamp > 0xfffffffe) {
      this.stamps.fill(0);
      this.stamp = 1;
    }
  }

  get(i: number): FieldValue {
    if (this.stamps[i] === this.stamp) return this.values[i];
    const v = FIELD_SPECS[i].get(this.ev!);
    this.values[i] = v;
    this.stamps[i] = this.stamp;
    return v;
  }
}

type Predicate = (f: EventFacts) => boolean;

/** A glob where "*" and "?" match any character ("/" and spaces too): for names and command lines. */
function textGlob(pattern: string): { exact: string[]; re: string[] } {
  const out = { exact: [] as string[], re: [] as string[] };
  for (const expansion of braceExpand(pattern)) {
    let src = '';
    let literal = '';
    let wild = false;
    for (let i = 0; i < expansion.length; i++) {
      const ch = expansion[i];
      if (ch === '\\' && i + 1 < expansion.length) {
        literal += expansion[++i];
        src += escapeRe(expansion[i]);
      } else if (ch === '*') {
        wild = true;
        src += '[\\s\\S]*';
      } else if (ch === '?') {
        wild = true;
        src += '[\\s\\S]';
      } else if (ch === '[') {
        const end = expansion.indexOf(']', i + 2);
        let body = expansion.slice(i + 1, end);
        if (body.startsWith('!')) body = '^' + body.slice(1);
        src += `[${body.replace(/\\/g, '\\\\')}]`;
        wild = true;
        i = end;
      } else {
        literal += ch;
        src += escapeRe(ch);
      }
    }
    if (wild) out.re.push(src);
    else out.exact.push(literal);
  }
  return out;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** "*literal*", "literal*" or "*literal" with nothing else special: tested with includes/startsWith/endsWith. */
const AFFIX = /^(\*?)([^*?[\]{}\\]+)(\*?)$/;

/**
 * A list of globs as one test: literal values in a Set, "*x*"-style ones as substring checks (a regex
 * with a leading [\s\S]* backtracks over every start), the rest in one alternation.
 */
function stringTest(type: 'path' | 'text', patterns: readonly string[]): (v: string) => boolean {
  const exact = new Set<string>();
  const res: RegExp[] = [];
  const textSources: string[] = [];
  const contains: string[] = [];
  const prefixes: string[] = [];
  const suffixes: string[] = [];
  for (const p of patterns) {
    const affix = type === 'text' ? AFFIX.exec(p) : null;
    if (affix && (affix[1] || affix[3])) {
      (affix[1] && affix[3] ? contains : affix[1] ? suffixes : prefixes).push(affix[2]);
      continue;
    }
    if (type === 'text') {
      const g = textGlob(p);
      for (const e of g.exact) exact.add(e);
      textSources.push(...g.re);
    }
  }
  // Paths: the engine's matcher (a Set plus one prefix-shared alternation over every brace expansion).
  if (type === 'path') {
    const m = new PathMatcher(patterns.map((entry) => ({ profile: '', file: '', line: 0, entry })));
    return (v) => m.matches(v);
  }
  if (textSources.length) res.push(unanchored(textSources));
  const regexTest = regexListTest(exact, res);
  if (contains.length + prefixes.length + suffixes.length === 0) return regexTest;
  return (v) => {
    for (let i = 0; i < contains.length; i++) if (v.includes(contains[i])) return true;
    for (let i = 0; i < prefixes.length; i++) if (v.startsWith(prefixes[i])) return true;
    for (let i = 0; i < suffixes.length; i++) if (v.endsWith(suffixes[i])) return true;
    return regexTest(v);
  };
}

const ANY_RUN = '[\\s\\S]*';

/**
 * One RegExp for text glob sources. When every source starts and ends with "*" it searches without
 * anchors and the outer "*"s: the same matches, without backtracking through every split of the value.
 */
function unanchored(sources: readonly string[]): RegExp {
  const inner = (src: string) =>
    src
      .slice(ANY_RUN.length, src.length - ANY_RUN.length)
      .split(ANY_RUN)
      .join('[\\s\\S]*?');
  if (sources.every((src) => src.length >= 2 * ANY_RUN.length && src.startsWith(ANY_RUN) && src.endsWith(ANY_RUN)))
    return new RegExp(sources.map(inner).join('|'));
  return new RegExp(`^(?:${sources.join('|')})$`);
}

/**
 * The longest literal run of a text glob expansion, which every match contains ("*BEGIN*PRIVATE KEY*"
 * gives "PRIVATE KEY"); a case pair class like [pP] counts as its letter, then matched ignoring case.
 */
function needleOf(expansion: string): { text: string; fold: boolean } | undefined {
  let best = { text: '', fold: false };
  let run = '';
  let fold = false;
  const end = () => {
    if (run.length > best.text.length) best = { text: run, fold };
    run = '';
    fold = false;
  };
  for (let i = 0; i < expansion.length; i++) {
    const ch = expansion[i];
    if (ch === '\\' && i + 1 < expansion.length) run += expansion[++i];
    else if (ch === '*' || ch === '?') end();
    else if (ch === '[') {
      const close = expansion.indexOf(']', i + 2);
      const body = expansion.slice(i + 1, close);
      if (body.length === 2 && body[0] !== body[1] && body[0].toLowerCase() === body[1].toLowerCase()) {
        run += body[0].toLowerCase();
        fold = true;
      } else end();
      i = close;
    } else run += ch;
  }
  end();
  return best.text ? best : undefined;
}

/**
 * A first check a value must pass for any of the globs to match it: it contains one of their needles.
 * Undefined when some glob has no literal run to look for.
 */
function needleTest(patterns: readonly string[]): ((hay: string) => boolean) | undefined {
  const plain = new Set<string>();
  const folded = new Set<string>();
  for (const p of patterns) {
    for (const e of braceExpand(p)) {
      const n = needleOf(e);
      if (!n) return undefined;
      if (n.fold) folded.add(n.text);
      else plain.add(n.text);
    }
  }
  const texts = [...plain];
  const foldRe = folded.size ? new RegExp([...folded].map(escapeRe).join('|'), 'i') : undefined;
  return (hay) => {
    for (let i = 0; i < texts.length; i++) if (hay.includes(texts[i])) return true;
    return foldRe !== undefined && foldRe.test(hay);
  };
}

const COMMAND_LINE_FIELDS = new Set(['proc.args', 'proc.cmdline', 'docker.args', 'docker.command']);
const MEMO_ENTRIES = 2048;
const MEMO_MAX_LENGTH = 1024;

/**
 * A string test that remembers its recent answers. Containers repeat themselves (the same programs,
 * command lines and files, over and over), so most values were seen moments ago and one hash lookup
 * replaces substring searches and RegExp runs. Bounded: cleared when full; long values are not kept.
 */
function memoised(test: (v: string) => boolean): (v: string) => boolean {
  const seen = new Map<string, boolean>();
  return (v) => {
    if (v.length > MEMO_MAX_LENGTH) return test(v);
    let r = seen.get(v);
    if (r === undefined) {
      r = test(v);
      if (seen.size >= MEMO_ENTRIES) seen.clear();
      seen.set(v, r);
    }
    return r;
  };
}

function regexListTest(exact: ReadonlySet<string>, res: readonly RegExp[]): (v: string) => boolean {
  if (res.length === 0) return (v) => exact.has(v);
  if (res.length === 1) {
    const re = res[0];
    return (v) => exact.has(v) || re.test(v);
  }
  return (v) => {
    if (exact.has(v)) return true;
    for (let i = 0; i < res.length; i++) if (res[i].test(v)) return true;
    return false;
  };
}

export type ReportProblem = (code: ErrorCode, message: string, field: FieldPath) => void;

const COMBINATORS = new Set(['all', 'any', 'not']);

/** Compiles a `when` condition; problems go to `report` with their field path, and undefined comes back. */
export function compileCondition(raw: unknown, on: DetectionEventKind, at: FieldPath, report: ReportProblem): Predicate | undefined {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    report('RW_RULE_INVALID', 'a condition is a mapping: { all: [...] }, { any: [...] }, { not: ... } or field: globs', at);
    return undefined;
  }
  const obj = raw as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length === 0) {
    report('RW_RULE_INVALID', 'an empty condition', at);
    return undefined;
  }
  if (keys.some((k) => COMBINATORS.has(k))) {
    if (keys.length !== 1) {
      report('RW_RULE_INVALID', `"${keys.find((k) => COMBINATORS.has(k))}" stands alone in its mapping; wrap field tests beside it in all: [...]`, at);
      return undefined;
    }
    const key = keys[0];
    const value = obj[key];
    if (key === 'not') {
      const inner = compileCondition(value, on, [...at, 'not'], report);
      return inner && ((f) => !inner(f));
    }
    if (!Array.isArray(value) || value.length === 0) {
      report('RW_RULE_INVALID', `${key} takes a non-empty list of conditions`, [...at, key]);
      return undefined;
    }
    const parts = value.map((c, i) => compileCondition(c, on, [...at, key, i], report));
    if (parts.some((p) => p === undefined)) return undefined;
    return key === 'all' ? allOf(parts as Predicate[]) : anyOf(parts as Predicate[]);
  }
  const tests: Predicate[] = [];
  let ok = true;
  for (const key of keys) {
    const t = compileFieldTest(key, obj[key], on, [...at, key], report);
    if (t) tests.push(t);
    else ok = false;
  }
  return ok ? allOf(tests) : undefined;
}

function allOf(ps: Predicate[]): Predicate {
  if (ps.length === 1) return ps[0];
  return (f) => {
    for (let i = 0; i < ps.length; i++) if (!ps[i](f)) return false;
    return true;
  };
}

function anyOf(ps: Predicate[]): Predicate {
  if (ps.length === 1) return ps[0];
  return (f) => {
    for (let i = 0; i < ps.length; i++) if (ps[i](f)) return true;
    return false;
  };
}

function compileFieldTest(name: string, value: unknown, on: DetectionEventKind, at: FieldPath, report: ReportProblem): Predicate | undefined {
  const idx = FIELD_INDEX.get(name);
  if (idx === undefined) {
    const known = FIELD_NAMES.filter((n) => DETECTION_FIELDS[n].on === on);
    report('RW_RULE_UNKNOWN_KEY', `unknown field "${name}"; fields for ${on}: ${known.join(', ')}`, at);
    return undefined;
  }
  const spec = FIELD_SPECS[idx];
  if (spec.on !== on) {
    report('RW_RULE_INVALID', `field "${name}" belongs to ${spec.on} events, but this detection is on: ${on}`, at);
    return undefined;
  }
  if (spec.type === 'bool') {
    if (typeof value !== 'boolean') {
      report('RW_RULE_INVALID', `field "${name}" takes true or false`, at);
      return undefined;
    }
    return (f) => f.get(idx) === value;
  }
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === 'string')) {
    report('RW_RULE_INVALID', `field "${name}" takes a glob or a non-empty list of globs`, at);
    return undefined;
  }
  let ok = true;
  list.forEach((g: string, i) => {
    const problem = globProblem(g, { absolute: spec.type === 'path' });
    if (problem) {
      report('RW_RULE_BAD_GLOB', `bad glob ${JSON.stringify(g)}: ${problem}`, Array.isArray(value) ? [...at, i] : at);
      ok = false;
    }
  });
  if (!ok) return undefined;
  const globs = list as string[];
  // Names and paths come back again and again; command lines often differ each time (then a memo only costs).
  const remember = !COMMAND_LINE_FIELDS.has(name) && !(spec.type === 'text' && globs.every((g) => !GLOB_CHARS.test(g)));
  const test = remember ? memoised(stringTest(spec.type, globs)) : stringTest(spec.type, globs);
  // Multi-valued fields are first searched once in their joined form; regex-backed single values first
  // for a literal they must hold.
  const joined = spec.joined !== undefined ? FIELD_INDEX.get(spec.joined) : undefined;
  const needlesOf = spec.type === 'text' && (joined !== undefined || globs.some((g) => !AFFIX.test(g) && GLOB_CHARS.test(g))) ? needleTest(globs) : undefined;
  const needles = needlesOf && (remember ? memoised(needlesOf) : needlesOf);
  if (needles && joined !== undefined) {
    return (f) => {
      if (!needles(f.get(joined) as string)) return false;
      const v = f.get(idx) as readonly string[];
      for (let i = 0; i < v.length; i++) if (test(v[i])) return true;
      return false;
    };
  }
  return (f) => {
    const v = f.get(idx) as string | readonly string[];
    if (typeof v === 'string') return (needles === undefined || needles(v)) && test(v);
    for (let i = 0; i < v.length; i++) if (test(v[i])) return true;
    return false;
  };
}

/** A detection ready to evaluate. */
export interface CompiledDetection {
  id: string;
  title: string;
  description: string;
  severity: Severity;
  mitre: string;
  on: DetectionEventKind;
  test: Predicate;
  /** The fields its condition reads. */
  fields: ReadonlySet<string>;
  /** Triggers (INDEX_PLANS) one of which fires for every event `test` can hold for; undefined runs it for every event. */
  gate?: readonly Trigger[];
  exceptImages: RegExp[];
  exceptProfiles: ReadonlySet<string>;
  file: string;
  line: number;
}

/** Compiles one Detection document; undefined when `report` was told of a problem. */
export function compileDetection(doc: DetectionDoc, where: { file: string; line: number }, report: ReportProblem): CompiledDetection | undefined {
  const test = compileCondition(doc.when, doc.on, ['when'], report);
  let ok = test !== undefined;
  const exceptImages: RegExp[] = [];
  (doc.except?.images ?? []).forEach((img, i) => {
    const problem = /\s/.test(img) ? 'holds white space' : globProblem(img, { absolute: false });
    if (problem) {
      report('RW_RULE_BAD_GLOB', `bad image pattern ${JSON.stringify(img)}: ${problem}`, ['except', 'images', i]);
      ok = false;
      return;
    }
    exceptImages.push(new Minimatch(normaliseImagePattern(img), { nonegate: true, nocomment: true }).makeRe() as RegExp);
  });
  if (!ok || !test) return undefined;
  const plan = INDEX_PLANS[doc.on];
  return {
    id: doc.id,
    title: doc.title,
    description: doc.description,
    severity: doc.severity,
    mitre: doc.mitre,
    on: doc.on,
    test,
    fields: conditionFields(doc.when),
    gate: plan && gateOf(doc.when, plan),
    exceptImages,
    exceptProfiles: new Set(doc.except?.profiles ?? []),
    file: where.file,
    line: where.line,
  };
}

/** The field names an already validated condition reads. */
function conditionFields(cond: unknown, out = new Set<string>()): Set<string> {
  for (const [key, value] of Object.entries(cond as Record<string, unknown>)) {
    if (key === 'not') conditionFields(value, out);
    else if (key === 'all' || key === 'any') for (const c of value as unknown[]) conditionFields(c, out);
    else out.add(key);
  }
  return out;
}

/** The profile facts a detection needs: its name and the detections it turned off. */
export interface DetectionProfile {
  name: string;
  disabledDetections: ReadonlySet<string>;
}

/**
 * What one of an event's facts must show for a condition to hold: a key of an indexed field (a name,
 * a path's first level or base name), a boolean field being true, or a literal in the command line.
 * A detection's gate is a list of triggers, one of which fires for every event it can match.
 */
type Trigger = { source: number; literal: string } | { source: number; glob: string } | { flag: number } | { needles: readonly Needle[] };
type Needle = { text: string; fold: boolean };

const GLOB_CHARS = /[*?[\]{}()!+@]/;

/** A path's first level with its slash ("/etc" for /etc/passwd); "" when not absolute. */
function firstLevel(p: string): string {
  if (p.charCodeAt(0) !== 47 /* "/" */) return '';
  const end = p.indexOf('/', 1);
  return end < 0 ? p : p.slice(0, end);
}

/** A field whose values give index keys. */
interface KeySource {
  field: DetectionField;
  /** Keys of a value; a path has two: its first level ("/etc") and its base name (never holds "/"). */
  keys(v: string, pick: (key: string) => void): void;
  /** The key of a glob expansion, or undefined when it has none (then `globKeys` decides). */
  keyOf(expansion: string): string | undefined;
  /** Key-less expansions are tested against each key with the field's own matching (names), or give no trigger (paths). */
  globKeys: boolean;
}

const NAME_SOURCE = (field: DetectionField): KeySource => ({
  field,
  keys: (v, pick) => pick(v),
  keyOf: (e) => (GLOB_CHARS.test(e) ? undefined : e),
  globKeys: true,
});

const PATH_SOURCE = (field: DetectionField): KeySource => ({
  field,
  keys: (v, pick) => {
    pick(firstLevel(v));
    pick(basename(v));
  },
  keyOf: (e) => {
    const first = firstLevel(e);
    if (first.length > 1 && !GLOB_CHARS.test(first)) return first;
    const base = basename(e);
    return base && !GLOB_CHARS.test(base) ? base : undefined;
  },
  globKeys: false,
});

/** How a kind's detections are indexed: key sources (best first), boolean fields, and the field needles are looked for in. */
interface IndexPlan {
  sources: KeySource[];
  flags: DetectionField[];
  /** Text fields whose globs' literals must show in `hay`. */
  needleFields?: DetectionField[];
  hay?: DetectionField;
  /** A memo of recent verdicts for the kind, built for its detections (see VerdictMemo). */
  verdicts?(list: readonly CompiledDetection[]): Verdicts;
}

/**
 * Which detections matched recent events. Containers repeat themselves (the same programs with the same
 * arguments, the same files written again and again), so a verdict is looked up by one field (the
 * executable, the path) and then compared field by field with everything the kind's facts are computed
 * from: an event is answered from the memo only when it is the same in every input, never by a hash
 * that an attacker could make collide. Bounded: a few variants per key, cleared when full.
 */
interface Verdicts {
  get(ev: DetectionEvent): readonly number[] | undefined;
  set(ev: DetectionEvent, matched: readonly number[]): void;
}

class VerdictMemo<S> implements Verdicts {
  private readonly byKey = new Map<string, { inputs: S; matched: readonly number[] }[]>();

  constructor(
    private readonly keyOf: (ev: DetectionEvent) => string,
    private readonly inputsOf: (ev: DetectionEvent) => S,
    private readonly same: (inputs: S, ev: DetectionEvent) => boolean,
  ) {}

  get(ev: DetectionEvent): readonly number[] | undefined {
    const variants = this.byKey.get(this.keyOf(ev));
    if (variants) for (let i = 0; i < variants.length; i++) if (this.same(variants[i].inputs, ev)) return variants[i].matched;
    return undefined;
  }

  set(ev: DetectionEvent, matched: readonly number[]): void {
    const key = this.keyOf(ev);
    if (key.length > MAX_VERDICT_KEY) return;
    let variants = this.byKey.get(key);
    if (!variants) {
      if (this.byKey.size >= VERDICT_KEYS) this.byKey.clear();
      this.byKey.set(key, (variants = []));
    } else if (variants.length >= VERDICT_VARIANTS) variants.shift();
    variants.push({ inputs: this.inputsOf(ev), matched });
  }
}

type ProcessInputs = Pick<ProcessExecEvent, 'exe' | 'argv0' | 'comm' | 'uid' | 'tty' | 'cwd' | 'args'> & {
  flags: number;
  ancestors: { exe: string; comm?: string }[];
};

function processFlags(e: ProcessExecEvent): number {
  return (e.stdioSocket === true ? 1 : 0) | (e.inUpperLayer === true ? 2 : 0) | (e.exeDeleted === true ? 4 : 0);
}

/** Compared from the end: arguments that differ between runs of one program are mostly the last ones. */
function sameStrings(a: readonly string[], b: readonly string[] | undefined): boolean {
  if (!b || a.length !== b.length) return false;
  for (let i = a.length - 1; i >= 0; i--) if (a[i] !== b[i]) return false;
  return true;
}

/** Process verdicts: by executable, then every input of the process fields (the parent's, or with ancestor.* every ancestor's). */
function processVerdicts(list: readonly CompiledDetection[]): Verdicts {
  const everyAncestor = list.some((d) => d.fields.has('ancestor.name') || d.fields.has('ancestor.exe'));
  const depth = (e: ProcessExecEvent) => Math.min(everyAncestor ? Infinity : 1, e.ancestors?.length ?? 0);
  return new VerdictMemo<ProcessInputs>(
    (ev) => (ev as ProcessExecEvent).exe ?? '',
    (ev) => {
      const e = ev as ProcessExecEvent;
      // Events are not changed once decided, so their arrays are kept, not copied.
      return {
        exe: e.exe,
        argv0: e.argv0,
        comm: e.comm,
        uid: e.uid,
        tty: e.tty,
        cwd: e.cwd,
        args: e.args ?? [],
        flags: processFlags(e),
        ancestors: e.ancestors ?? [],
      };
    },
    (s, ev) => {
      const e = ev as ProcessExecEvent;
      // The memo's key is the executable; what differs most often is compared first.
      if (s.uid !== e.uid || s.flags !== processFlags(e) || !sameStrings(s.args, e.args)) return false;
      if (s.argv0 !== e.argv0 || s.comm !== e.comm || s.tty !== e.tty || s.cwd !== e.cwd) return false;
      const n = depth(e);
      if (Math.min(s.ancestors.length, everyAncestor ? Infinity : 1) !== n) return false;
      for (let i = 0; i < n; i++) if (s.ancestors[i].exe !== e.ancestors[i].exe || s.ancestors[i].comm !== e.ancestors[i].comm) return false;
      return true;
    },
  );
}

type FileInputs = Pick<FileChangeEvent, 'path' | 'op' | 'mode' | 'previousMode' | 'nlink' | 'linkTarget'> & { processExe?: string };

function fileVerdicts(): Verdicts {
  return new VerdictMemo<FileInputs>(
    (ev) => (ev as FileChangeEvent).path ?? '',
    (ev) => {
      const e = ev as FileChangeEvent;
      return { path: e.path, op: e.op, mode: e.mode, previousMode: e.previousMode, nlink: e.nlink, linkTarget: e.linkTarget, processExe: e.process?.exe };
    },
    (s, ev) => {
      const e = ev as FileChangeEvent;
      return (
        s.path === e.path &&
        s.op === e.op &&
        s.mode === e.mode &&
        s.previousMode === e.previousMode &&
        s.nlink === e.nlink &&
        s.linkTarget === e.linkTarget &&
        s.processExe === e.process?.exe
      );
    },
  );
}

const INDEX_PLANS: Partial<Record<DetectionEventKind, IndexPlan>> = {
  process_exec: {
    sources: [NAME_SOURCE('proc.name'), PATH_SOURCE('proc.exe')],
    flags: ['proc.inUpperLayer', 'proc.exeDeleted', 'proc.stdioSocket', 'proc.tty'],
    needleFields: ['proc.args', 'proc.cmdline'],
    hay: 'proc.cmdline',
    verdicts: processVerdicts,
  },
  file_change: {
    sources: [PATH_SOURCE('file.path'), PATH_SOURCE('file.linkTarget')],
    flags: ['file.setid', 'file.hardLink'],
    verdicts: fileVerdicts,
  },
};

/**
 * Triggers one of which fires whenever an already validated condition holds: from a field test (its
 * globs' keys, `true` of a boolean, its globs' literals), from the best member of an `all`, or from
 * every member of an `any`. Undefined when there are none (the detection then runs for every event).
 */
function gateOf(cond: unknown, plan: IndexPlan): Trigger[] | undefined {
  const obj = cond as Record<string, unknown>;
  if ('not' in obj) return undefined;
  if ('any' in obj) {
    const out: Trigger[] = [];
    for (const c of obj.any as unknown[]) {
      const g = gateOf(c, plan);
      if (!g) return undefined;
      out.push(...g);
    }
    return out;
  }
  const members = 'all' in obj ? (obj.all as unknown[]).map((c) => gateOf(c, plan)) : Object.keys(obj).map((k) => fieldGate(k, obj[k], plan));
  let best: Trigger[] | undefined;
  for (const g of members) if (g && (!best || gateRank(g) < gateRank(best))) best = g;
  return best;
}

/** Keys are the cheapest to check and the most selective, then flags; needles need the command line joined. */
function gateRank(g: readonly Trigger[]): number {
  return g.some((t) => 'needles' in t) ? 2 : g.some((t) => 'flag' in t) ? 1 : 0;
}

function fieldGate(name: string, value: unknown, plan: IndexPlan): Trigger[] | undefined {
  if (typeof value === 'boolean') {
    const flag = plan.flags.indexOf(name as DetectionField);
    return value && flag >= 0 ? [{ flag: FIELD_INDEX.get(name)! }] : undefined;
  }
  const globs = typeof value === 'string' ? [value] : (value as string[]);
  const source = plan.sources.findIndex((s) => s.field === name);
  if (source >= 0) {
    const out: Trigger[] = [];
    for (const g of globs) {
      for (const e of braceExpand(g)) {
        const literal = plan.sources[source].keyOf(e);
        if (literal !== undefined) out.push({ source, literal });
        else if (plan.sources[source].globKeys) out.push({ source, glob: e });
        else return undefined;
      }
    }
    return out;
  }
  if (plan.needleFields?.includes(name as DetectionField)) {
    const needles: Needle[] = [];
    for (const g of globs) {
      for (const e of braceExpand(g)) {
        const n = needleOf(e);
        if (!n) return undefined;
        needles.push(n);
      }
    }
    return [{ needles }];
  }
  return undefined;
}

/**
 * Detections of one event kind with an index that skips most of them early: a detection whose
 * condition needs proc.name to be "sh" or "bash" runs only for events with one of those names, one that
 * needs file.path below /etc only for paths whose first level is "/etc", one that needs "stratum+tcp://"
 * in the command line only when it is there. Evaluation order (and so the order of findings) stays load order.
 */
class DetectionIndex {
  private readonly sources: {
    source: KeySource;
    field: number;
    byKey: Map<string, number[]>;
    keyTests: { pos: number; test: (key: string) => boolean }[];
    /** Positions each recently seen key picks, glob-keyed ones included (names repeat: one lookup instead of every glob). */
    picksByKey: Map<string, readonly number[]>;
    pickKey: (key: string) => void;
  }[];
  private readonly flags: { field: number; pos: number }[] = [];
  private readonly needled: { pos: number; needles: readonly Needle[] }[] = [];
  /** Every needle in one RegExp (two: exact and case-folded): most command lines hold none, and one search says so. */
  private readonly anyNeedle: RegExp[] = [];
  private readonly hayField: number | undefined;
  private readonly foldHay: boolean;
  /** Positions whose needles a recently seen command line holds. */
  private readonly picksByHay = new Map<string, readonly number[]>();
  /** Per profile: 1 where the profile turned the detection off or is excepted from it. */
  private readonly offByProfile = new WeakMap<DetectionProfile, Uint8Array>();
  /** Per position: the detection runs only when a trigger picked it. */
  private readonly gated: boolean[] = [];
  private readonly picked: Uint32Array;
  private stamp = 0;
  private readonly verdicts: Verdicts | undefined;

  constructor(
    readonly list: readonly CompiledDetection[],
    plan: IndexPlan | undefined,
  ) {
    this.picked = new Uint32Array(list.length);
    this.verdicts = list.length ? plan?.verdicts?.(list) : undefined;
    this.sources = (plan?.sources ?? []).map((source) => {
      const s: DetectionIndex['sources'][number] = {
        source,
        field: FIELD_INDEX.get(source.field)!,
        byKey: new Map(),
        keyTests: [],
        picksByKey: new Map(),
        pickKey: (key) => this.mark(s.keyTests.length ? this.picksOf(s, key) : s.byKey.get(key)),
      };
      return s;
    });
    this.hayField = plan?.hay && FIELD_INDEX.get(plan.hay);
    list.forEach((d, pos) => {
      this.gated.push(d.gate !== undefined);
      const globs = new Map<number, string[]>();
      for (const t of d.gate ?? []) {
        if ('flag' in t) this.flags.push({ field: t.flag, pos });
        else if ('needles' in t) this.needled.push({ pos, needles: t.needles });
        else if ('literal' in t) {
          const byKey = this.sources[t.source].byKey;
          const at = byKey.get(t.literal);
          if (!at) byKey.set(t.literal, [pos]);
          else if (at.at(-1) !== pos) at.push(pos);
        } else globs.set(t.source, [...(globs.get(t.source) ?? []), t.glob]);
      }
      for (const [source, gs] of globs) this.sources[source].keyTests.push({ pos, test: stringTest('text', gs) });
    });
    this.foldHay = this.needled.some((n) => n.needles.some((x) => x.fold));
    for (const fold of [false, true]) {
      const texts = [...new Set(this.needled.flatMap((n) => n.needles.filter((x) => x.fold === fold).map((x) => escapeRe(x.text))))];
      if (texts.length) this.anyNeedle.push(new RegExp(texts.join('|'), fold ? 'i' : ''));
    }
  }

  /** Marks the detections the event's facts trigger; returns the stamp they carry. */
  pick(facts: EventFacts): number {
    if (++this.stamp > 0xfffffffe) {
      this.picked.fill(0);
      this.stamp = 1;
    }
    for (let s = 0; s < this.sources.length; s++) {
      const { source, field, pickKey } = this.sources[s];
      const v = facts.get(field) as string | readonly string[];
      if (typeof v === 'string') {
        if (v !== '') source.keys(v, pickKey);
      } else for (let i = 0; i < v.length; i++) source.keys(v[i], pickKey);
    }
    for (let i = 0; i < this.flags.length; i++) if (facts.get(this.flags[i].field) === true) this.picked[this.flags[i].pos] = this.stamp;
    if (this.needled.length && this.hayField !== undefined) this.mark(this.picksOfHay(facts.get(this.hayField) as string));
    return this.stamp;
  }

  private mark(at: readonly number[] | undefined): void {
    if (at) for (let i = 0; i < at.length; i++) this.picked[at[i]] = this.stamp;
  }

  private picksOf(s: DetectionIndex['sources'][number], key: string): readonly number[] {
    const memo = s.picksByKey;
    let at = memo.get(key);
    if (at) return at;
    const found = new Set(s.byKey.get(key));
    for (const t of s.keyTests) if (t.test(key)) found.add(t.pos);
    at = [...found];
    if (memo.size >= PICKS_REMEMBERED) memo.clear();
    memo.set(key, at);
    return at;
  }

  private picksOfHay(hay: string): readonly number[] {
    let at = this.picksByHay.get(hay);
    if (at) return at;
    if (!this.anyNeedle.some((re) => re.test(hay))) return NO_PICKS;
    const lower = this.foldHay ? hay.toLowerCase() : hay;
    at = this.needled.filter((n) => n.needles.some((x) => (x.fold ? lower : hay).includes(x.text))).map((n) => n.pos);
    if (hay.length <= MEMO_MAX_LENGTH) {
      if (this.picksByHay.size >= PICKS_REMEMBERED) this.picksByHay.clear();
      this.picksByHay.set(hay, at);
    }
    return at;
  }

  runs(pos: number, stamp: number): boolean {
    return !this.gated[pos] || this.picked[pos] === stamp;
  }

  /**
   * Positions of the detections whose condition holds for the event (profiles and images not yet
   * considered); an exec or write seen moments ago gets its answer from the memo.
   */
  matching(ev: DetectionEvent, facts: EventFacts, failed: () => void): readonly number[] {
    const known = this.verdicts?.get(ev);
    if (known) return known;
    facts.reset(ev);
    let out: number[] = [];
    try {
      const stamp = this.pick(facts);
      for (let i = 0; i < this.list.length; i++) {
        if (!this.runs(i, stamp)) continue;
        try {
          if (this.list[i].test(facts)) out.push(i);
        } catch {
          failed();
        }
      }
    } catch {
      failed();
      out = [];
    }
    this.verdicts?.set(ev, out);
    return out;
  }

  /** Which detections are off for a profile (its `detections.disable`, their `except.profiles`); computed once per profile. */
  offFor(profile: DetectionProfile): Uint8Array {
    let off = this.offByProfile.get(profile);
    if (!off) {
      off = Uint8Array.from(this.list, (d) => (profile.disabledDetections.has(d.id) || d.exceptProfiles.has(profile.name) ? 1 : 0));
      this.offByProfile.set(profile, off);
    }
    return off;
  }
}

const PICKS_REMEMBERED = 4096;
const NO_PICKS: readonly number[] = Object.freeze([]);
const VERDICT_KEYS = 2048;
const VERDICT_VARIANTS = 4;
const MAX_VERDICT_KEY = 4096;
const NONE: Finding[] = Object.freeze([]) as unknown as Finding[];
const MAX_SHOWN = 240;

/** Every compiled detection, grouped by the event kind it looks at. */
export class DetectionSet {
  private readonly processExec: DetectionIndex;
  private readonly fileChange: DetectionIndex;
  private readonly netSocket: DetectionIndex;
  private readonly dockerAction: DetectionIndex;
  private readonly ids: Set<string>;
  private readonly facts = new EventFacts();
  /** Evaluations that threw (a bug, never an event's fault); the detection is skipped for that event. */
  failures = 0;

  constructor(readonly all: readonly CompiledDetection[]) {
    const of = (kind: DetectionEventKind) =>
      new DetectionIndex(
        all.filter((d) => d.on === kind),
        INDEX_PLANS[kind],
      );
    this.processExec = of('process_exec');
    this.fileChange = of('file_change');
    this.netSocket = of('net_socket');
    this.dockerAction = of('docker_action');
    this.ids = new Set(all.map((d) => d.id));
  }

  get size(): number {
    return this.all.length;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** The findings of every detection that matches the event; pure apart from the failure count, never throws. */
  findings(ev: DetectionEvent, info: ContainerInfo, profile: DetectionProfile | undefined): Finding[] {
    const kind = this.indexFor(ev.kind);
    const list = kind.list;
    if (list.length === 0) return NONE;
    const matched = kind.matching(ev, this.facts, this.countFailure);
    if (matched.length === 0) return NONE;
    const off = profile && kind.offFor(profile);
    let out: Finding[] | undefined;
    for (let i = 0; i < matched.length; i++) {
      const d = list[matched[i]];
      if ((off && off[matched[i]] === 1) || exceptedImage(d, info)) continue;
      (out ??= []).push(detectionFinding(d, ev, info, profile));
    }
    return out ?? NONE;
  }

  // A switch over the kinds, not a keyed lookup: the key varies per event, which makes a property load megamorphic.
  private indexFor(kind: DetectionEventKind): DetectionIndex {
    switch (kind) {
      case 'process_exec':
        return this.processExec;
      case 'file_change':
        return this.fileChange;
      case 'net_socket':
        return this.netSocket;
      default:
        return this.dockerAction;
    }
  }

  private readonly countFailure = (): void => {
    this.failures++;
  };
}

function exceptedImage(d: CompiledDetection, info: ContainerInfo): boolean {
  if (d.exceptImages.length === 0) return false;
  const candidates = [parseImageRef(info.image).normalised, ...(info.imageRepoDigests ?? []).map((r) => parseImageRef(r).normalised)];
  return d.exceptImages.some((re) => candidates.some((c) => re.test(c)));
}

function shorten(s: string): string {
  return s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN)}…` : s;
}

const FILE_VERBS: Record<FileChangeEvent['op'], string> = { create: 'created', modify: 'modified', delete: 'deleted', chmod: 'chmod-ed' };

/** What happened, for the message, and what groups repeats of it. */
function describe(ev: DetectionEvent): { what: string; subject: string } {
  switch (ev.kind) {
    case 'process_exec': {
      const names = processNames(ev);
      const as = names[1] ? ` as "${names[1]}"` : '';
      const parent = ev.ancestors?.[0] ? `, parent ${ancestorNames(ev.ancestors[0]).at(-1)}` : '';
      return {
        what: `process ${ev.exe || '(unknown)'}${as} ran: ${shorten(JSON.stringify((ev.args ?? []).join(' ')))}${parent}`,
        subject: `${ev.exe}\0${names[1] ?? names[0]}`,
      };
    }
    case 'file_change': {
      const link = ev.linkTarget ? ` (link to ${ev.linkTarget})` : '';
      const mode = ev.mode !== undefined && ev.op === 'chmod' ? ` (mode ${(ev.mode & 0o7777).toString(8).padStart(4, '0')})` : '';
      const by = ev.process ? ` by ${ev.process.exe}` : '';
      return { what: `file ${ev.path} was ${FILE_VERBS[ev.op] ?? ev.op}${link}${mode}${by}`, subject: ev.pathPrefix ?? ev.path };
    }
    case 'net_socket':
      return ev.direction === 'listen'
        ? { what: `${ev.protocol} listen on ${ev.local}`, subject: `listen ${ev.local}` }
        : { what: `${ev.protocol} connection to ${ev.remote ?? '?'}`, subject: `connect ${ev.remote ?? ''}` };
    case 'docker_action': {
      const by = ev.hostUser?.user ? ` by host user ${ev.hostUser.user}` : ev.hostUser ? ` by host uid ${ev.hostUser.uid}` : '';
      return { what: `docker ${ev.action} ${shorten(JSON.stringify(ev.command ?? ''))}${by}`, subject: `${ev.action}\0${ev.command ?? ''}` };
    }
  }
}

function detectionFinding(d: CompiledDetection, ev: DetectionEvent, info: ContainerInfo, profile: DetectionProfile | undefined): Finding {
  const { what, subject } = describe(ev);
  const f: Finding = {
    kind: 'alert',
    rule: d.id,
    severity: d.severity,
    message: `${d.title}: ${what} in container ${info.name || info.id.slice(0, 12)} (${info.image})`,
    mitre: d.mitre,
    decidedBy: `detection ${d.id}`,
    allowHint: `detections: { disable: [${d.id}] }`,
    details: { description: d.description },
    subject,
  };
  if (profile) f.profile = profile.name;
  return f;
}
