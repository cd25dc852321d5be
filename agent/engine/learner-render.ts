import { readFileSync } from 'node:fs';
import { Document, isMap, isScalar, isSeq, type Node, type ToStringOptions, type YAMLMap } from 'yaml';
import { parseYamlDocuments } from '../config/yaml-source.js';
import { RunwatchError, RunwatchErrors } from '../errors.js';
import { yamlScalar } from './findings.js';
import type { AllowCheck, GeneraliseRule, LearnedEntry, LearnedLists, Observations, ProcessEntry } from './learner.js';
import { netRuleFor } from './ruleset.js';
import { compileRuleset } from './rule-compiler.js';
import { parseRuleText, type LoadedRuleDoc } from './rule-loader.js';
import { RULES_API_VERSION } from './rule-schema.js';

/** The first words and the last line of every header the learner writes; a merge replaces what lies between. */
const HEADER_MARK = ' runwatch learn:';
const HEADER_END = " Each entry's comment counts the events that needed it.";
const YAML_OUT: ToStringOptions = { lineWidth: 0 };

/** What the coverage comment says about a learning run. */
export interface LearnCoverage {
  containers: number;
  events: number;
  startedAt: number;
  endedAt: number;
  lastNewAt?: number;
  unresolvedExecs: number;
  heldDropped: number;
  /** Sensors that were not running, so their lists could not be learned. */
  sensorsOff: readonly string[];
  rule: GeneraliseRule;
}

export function coverageOf(o: Observations, extra: { endedAt: number; sensorsOff: readonly string[]; rule: GeneraliseRule }): LearnCoverage {
  return {
    containers: o.containers.size,
    events: o.events,
    startedAt: o.startedAt,
    lastNewAt: o.lastNewAt,
    unresolvedExecs: o.unresolvedExecs,
    heldDropped: o.heldDropped,
    ...extra,
  };
}

/** One entry a learned (or merged) profile adds, for the review diff. */
export interface AddedEntry {
  list: 'images' | 'process.allow' | 'files.write' | 'network.listen' | 'network.connect';
  text: string;
  count?: number;
  note?: string;
}

export interface RenderedProfile {
  text: string;
  /** The profile's name. */
  name: string;
  added: AddedEntry[];
}

export interface FreshProfileOptions {
  name: string;
  images: readonly string[];
  lists: LearnedLists;
  coverage: LearnCoverage;
}

/** A new ImageProfile document holding the learned lists, with its coverage comment. Deterministic apart from the comment's times. */
export function renderProfile(opts: FreshProfileOptions): RenderedProfile {
  const doc = new Document({
    apiVersion: RULES_API_VERSION,
    kind: 'ImageProfile',
    name: opts.name,
    images: [],
    process: { allow: [] },
    files: { write: [] },
    network: { listen: [], connect: [] },
  });
  (doc.getIn(['images'], true) as Node & { flow?: boolean }).flow = true;
  const added = applyLearned(doc, opts.images, opts.lists);
  doc.commentBefore = header(opts.coverage, opts.lists, opts.images);
  return { text: doc.toString(YAML_OUT), name: opts.name, added };
}

/** An existing rule file, read and checked before learning starts, with the profile a merge adds to. */
export interface MergeTarget {
  file: string;
  name: string;
  /** Every document of the file, written back as they were apart from the target's additions. */
  documents: Document.Parsed[];
  target: Document.Parsed;
  /** What the target already allows (its own lists; what it inherits through `extends` is not consulted). */
  allows: AllowCheck;
  extends: readonly string[];
}

/**
 * Reads `file` and picks the profile to merge into: the one named `name`, else the only one, else the one
 * listing one of `images`. Every problem is a located RunwatchError, thrown before any learning starts.
 */
export function readMergeTarget(file: string, opts: { name?: string; images: readonly string[] }): MergeTarget {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RunwatchError(
      'RW_RULE_READ',
      `cannot read the profile to merge into: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      { file },
      { cause: err },
    );
  }
  const parsed = parseRuleText(text, file);
  if (parsed.errors.length) throw new RunwatchErrors(parsed.errors);
  const profiles = parsed.docs.filter((d): d is Extract<LoadedRuleDoc, { kind: 'ImageProfile' }> => d.kind === 'ImageProfile');
  const names = profiles.map((p) => p.doc.name);
  const chosen =
    opts.name !== undefined
      ? profiles.find((p) => p.doc.name === opts.name)
      : profiles.length === 1
        ? profiles[0]
        : profiles.find((p) => p.doc.images.some((i) => opts.images.includes(i)));
  if (!chosen) {
    const why =
      opts.name !== undefined
        ? `has no profile named "${opts.name}"`
        : profiles.length === 0
          ? 'holds no ImageProfile'
          : `holds ${profiles.length} profiles (${names.join(', ')}); choose one with --name`;
    throw new RunwatchError('RW_USAGE', `${file} ${why}`, { file });
  }
  // Checked on its own: inherited profiles may live in other files, so `extends` is set aside here.
  const standalone = parsed.docs.map((d) => (d.kind === 'ImageProfile' ? { ...d, doc: { ...d.doc, extends: [] } } : d));
  const { ruleset, errors } = compileRuleset(standalone, { defaults: { cpuHighPercent: 100, memoryHighPercent: 100 } }, [file]);
  if (!ruleset) throw new RunwatchErrors(errors);
  const p = ruleset.profile(chosen.doc.name)!;
  const documents = parseYamlDocuments(text, file, 'RW_RULE_YAML').docs.map((d) => d.doc);
  const target = documents.find((d) => d.contents?.range?.[0] === chosen.src.doc.contents?.range?.[0])!;
  return {
    file,
    name: chosen.doc.name,
    documents,
    target,
    extends: chosen.doc.extends,
    allows: {
      process: (exe, name) => p.process.allows(exe, () => name),
      write: (path) => p.writes.matches(path),
      listen: (proto, ep) => netRuleFor(p.listen, proto, ep) !== undefined,
      connect: (proto, ep) => netRuleFor(p.connect, proto, ep) !== undefined,
    },
  };
}

/**
 * Adds the learned lists (computed against `target.allows`, so only what is new) to the target profile and
 * writes the whole file back: other documents, comments and existing entries stay as they were.
 */
export function renderMerged(target: MergeTarget, opts: { images: readonly string[]; lists: LearnedLists; coverage: LearnCoverage }): RenderedProfile {
  const doc = target.target;
  const added = applyLearned(doc, opts.images, opts.lists);
  // An earlier header may sit on the document, its contents or its first key, depending on the layout.
  const contents = doc.contents as YAMLMap;
  const firstKey = contents.items[0]?.key as Node | undefined;
  doc.commentBefore = withoutHeader(doc.commentBefore) ?? null;
  if (firstKey) firstKey.commentBefore = withoutHeader(firstKey.commentBefore);
  const own = withoutHeader(contents.commentBefore);
  const merged = header(opts.coverage, opts.lists, opts.images, { file: target.file, added: added.length, extends: target.extends });
  // On the contents, so that in a multi-document file it follows the document's "---".
  contents.commentBefore = own ? `${merged}\n${own}` : merged;
  return { text: target.documents.map((d) => d.toString(YAML_OUT)).join(''), name: target.name, added };
}

/** A comment without the learner's header in front (the rest is the user's and stays). */
function withoutHeader(comment: string | null | undefined): string | undefined {
  if (!comment?.startsWith(HEADER_MARK)) return comment ?? undefined;
  const lines = comment.split('\n');
  const end = lines.indexOf(HEADER_END);
  return end < 0 ? undefined : lines.slice(end + 1).join('\n') || undefined;
}

/** The review diff: one "+ list: entry  # count" line per addition. */
export function formatAdded(r: RenderedProfile, where?: string): string {
  const at = where ? ` (${where})` : '';
  if (r.added.length === 0) return `profile "${r.name}"${at}: nothing to add; everything observed is already allowed\n`;
  const lines = r.added.map((a) => `+ ${a.list}: ${a.text}${a.count !== undefined ? `  # ${countComment(a.count, a.note)}` : ''}`);
  return `profile "${r.name}"${at}: ${r.added.length} entr${r.added.length === 1 ? 'y' : 'ies'} to add\n${lines.join('\n')}\n`;
}

function applyLearned(doc: Document, images: readonly string[], lists: LearnedLists): AddedEntry[] {
  const added: AddedEntry[] = [];
  const imageSeq = seqAt(doc, ['images']);
  const have = new Set(imageSeq.items.map((n) => (isScalar(n) ? String(n.value) : '')));
  for (const img of images) {
    if (have.has(img)) continue;
    imageSeq.items.push(doc.createNode(img));
    added.push({ list: 'images', text: yamlScalar(img) });
  }
  const put = (path: string[], list: AddedEntry['list'], entries: readonly LearnedEntry[]) => {
    const seq = seqAt(doc, path);
    if (entries.length) seq.flow = false;
    for (const e of entries) {
      const node = doc.createNode(e.value) as Node;
      if (isMap(node)) (node as YAMLMap).flow = true;
      node.comment = ` ${countComment(e.count, e.note)}`;
      seq.items.push(node);
      added.push({ list, text: entryText(e.value), count: e.count, ...(e.note !== undefined && { note: e.note }) });
    }
  };
  put(['process', 'allow'], 'process.allow', lists.process);
  put(['files', 'write'], 'files.write', lists.write);
  put(['network', 'listen'], 'network.listen', lists.listen);
  put(['network', 'connect'], 'network.connect', lists.connect);
  return added;
}

/** The sequence at `path`, made (empty) when the document has none there. */
function seqAt(doc: Document, path: string[]) {
  const node = doc.getIn(path, true);
  if (isSeq(node)) return node;
  const seq = doc.createNode([]);
  doc.setIn(path, seq);
  return seq;
}

function countComment(count: number, note: string | undefined): string {
  return note ? `${count} (${note})` : String(count);
}

function entryText(v: ProcessEntry): string {
  return typeof v === 'string' ? yamlScalar(v) : `{ exe: ${yamlScalar(v.exe)}, names: [${v.names.map(yamlScalar).join(', ')}] }`;
}

function header(c: LearnCoverage, lists: LearnedLists, images: readonly string[], merge?: { file: string; added: number; extends: readonly string[] }): string {
  const n = lists.process.length + lists.write.length + lists.listen.length + lists.connect.length;
  const entries = `${n} ${merge ? 'new ' : ''}entr${n === 1 ? 'y' : 'ies'} (${lists.process.length} process, ${lists.write.length} files, ${lists.listen.length} listen, ${lists.connect.length} connect)`;
  const lines = [
    `${HEADER_MARK} learned from what containers of ${images.join(', ')} did.`,
    ' Review every entry: the profile allows what those containers did while watched, and nothing else.',
    ` Coverage: ${plural(c.containers, 'container')}, ${plural(c.events, 'event')}, ${entries}.`,
  ];
  if (merge)
    lines.push(
      ` Merged into ${merge.file}: ${plural(merge.added, 'addition')}${merge.extends.length ? ` (entries inherited from ${merge.extends.join(', ')} were not consulted)` : ''}.`,
    );
  lines.push(` Observed: ${iso(c.startedAt)} to ${iso(c.endedAt)} (${duration(c.endedAt - c.startedAt)}).`);
  if (c.lastNewAt === undefined) lines.push(' Stopped growing: nothing was observed.');
  else if (c.endedAt - c.lastNewAt < (c.endedAt - c.startedAt) / 4)
    lines.push(` Still growing: the last new entry came ${duration(c.endedAt - c.lastNewAt)} before learning ended; learn for longer.`);
  else lines.push(` Stopped growing: ${duration(c.endedAt - c.lastNewAt)} before learning ended (last new entry ${iso(c.lastNewAt)}).`);
  lines.push(` Paths: ${c.rule.minSiblings} or more names written in one directory ${c.rule.minDepth} or more levels deep became "dir/**".`);
  for (const s of c.sensorsOff) lines.push(` Not learned: the ${s} sensor was not running, so ${SENSOR_LISTS[s] ?? s} could not be learned.`);
  if (c.unresolvedExecs) lines.push(` ${plural(c.unresolvedExecs, 'process start')} ended before the executable could be read (not listed).`);
  if (c.heldDropped) lines.push(` ${plural(c.heldDropped, 'event')} of containers not yet known to the agent were lost (hold limit).`);
  for (const u of lists.unlisted) lines.push(` Not listable (review by hand): ${u}.`);
  lines.push(HEADER_END);
  return lines.join('\n');
}

const SENSOR_LISTS: Record<string, string> = { process: 'process.allow', file: 'files.write', network: 'network.listen and network.connect' };

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** "1h 5m", "40m 0s", "7s". */
export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
