import { Minimatch } from 'minimatch';
import { formatPath, locate, type FieldPath, type SourcedDocument } from '../config/yaml-source.js';
import { RunwatchError, RunwatchErrors, type ErrorCode } from '../errors.js';
import type { Severity } from '../events/types.js';
import { literalLength, normaliseImagePattern } from './image-ref.js';
import { NetSpecError, parseConnectSpec, parseListenSpec } from './net-spec.js';
import { CAPABILITIES, normaliseCapability } from './container-checks.js';
import { compileDetection, DetectionSet, type CompiledDetection } from './detections.js';
import { compileGlob, globProblem, PathMatcher, type EntryOrigin } from './path-matcher.js';
import { PathVerdictTable } from './path-verdicts.js';
import { loadRuleDocuments, type LoadedRuleDoc } from './rule-loader.js';
import { RULE_CATALOG, type DetectionDoc, type ImagePolicyDoc, type ImageProfileDoc } from './rule-schema.js';
import { ProcessAllowlist, Ruleset, type CompiledPolicy, type CompiledProfile, type ImagePattern, type NetRule, type Thresholds } from './ruleset.js';

export interface CompileOptions {
  /** Resource thresholds for profiles that set none (config metrics.*HighPercent). */
  defaults: Thresholds;
}

class ErrorList {
  readonly errors: RunwatchError[] = [];
  /** An unknown key is located at the key itself, anything else at the value. */
  add(code: ErrorCode, message: string, src: SourcedDocument, field: FieldPath): void {
    const at = locate(src, field, code === 'RW_RULE_UNKNOWN_KEY');
    this.errors.push(new RunwatchError(code, message, { file: src.file, ...at, field: formatPath(field) || undefined }));
  }
}

type ProfileDoc = { doc: ImageProfileDoc; src: SourcedDocument };

/** Validates what the schema cannot (globs, CIDRs, names, extends) and compiles documents into a Ruleset. */
export function compileRuleset(
  docs: readonly LoadedRuleDoc[],
  opts: CompileOptions,
  files: readonly string[] = [],
  /** Profiles whose documents failed validation: extending them is not reported again. */
  invalidProfiles: ReadonlySet<string> = new Set(),
): { ruleset?: Ruleset; sources?: RuleSources; errors: RunwatchError[] } {
  const errs = new ErrorList();
  const profiles = new Map<string, ProfileDoc>();
  let policy: { doc: ImagePolicyDoc; src: SourcedDocument } | undefined;
  const detections = new Map<string, CompiledDetection>();
  const detectionSources: DetectionSource[] = [];
  for (const d of docs) {
    if (d.kind === 'Detection') {
      const first = detections.get(d.doc.id);
      if (first) errs.add('RW_RULE_DUPLICATE', `detection "${d.doc.id}" is already defined at ${first.file}:${first.line}`, d.src, ['id']);
      const compiled = compileDetection(d.doc, { file: d.src.file, line: locate(d.src, ['id']).line }, (code, message, field) =>
        errs.add(code, message, d.src, field),
      );
      if (compiled && !first) {
        detections.set(d.doc.id, compiled);
        detectionSources.push(detectionSource(compiled, d.doc, d.src));
      }
      continue;
    }
    if (d.kind === 'ImagePolicy') {
      if (policy)
        errs.add('RW_RULE_DUPLICATE', `a second ImagePolicy; the first is at ${policy.src.file}:${policy.src.line} (one policy per ruleset)`, d.src, ['kind']);
      else policy = { doc: d.doc, src: d.src };
      continue;
    }
    const first = profiles.get(d.doc.name);
    if (first)
      errs.add('RW_RULE_DUPLICATE', `profile "${d.doc.name}" is already defined at ${first.src.file}:${locate(first.src, ['name']).line}`, d.src, ['name']);
    else profiles.set(d.doc.name, { doc: d.doc, src: d.src });
  }
  for (const p of profiles.values()) checkProfile(p, errs);
  // Without any detection loaded (a profile folder checked alone) the ids cannot be checked.
  if (detections.size) {
    for (const p of profiles.values()) {
      (p.doc.detections?.disable ?? []).forEach((id, i) => {
        if (!detections.has(id))
          errs.add('RW_RULE_INVALID', `unknown detection "${id}"${suggest(id, [...detections.keys()])}`, p.src, ['detections', 'disable', i]);
      });
    }
    // The schema let through only keys shaped like detection ids outside runwatch's own sets.
    for (const id of Object.keys(policy?.doc.severities ?? {})) {
      if (!(id in RULE_CATALOG) && !detections.has(id))
        errs.add('RW_RULE_UNKNOWN_KEY', `unknown key "${id}": no rule or loaded detection has this id${suggest(id, [...detections.keys()])}`, policy!.src, [
          'severities',
          id,
        ]);
    }
  }
  if (policy) checkPolicy(policy.doc, policy.src, errs);
  const order = resolveExtends(profiles, invalidProfiles, errs);
  if (errs.errors.length) return { errors: errs.errors };
  const verdicts = new PathVerdictTable();
  const compiled = order.map((name) => compileProfile(name, profiles, verdicts));
  // Keep load order (it breaks ties between equally specific image patterns).
  const byName = new Map(compiled.map((c) => [c.name, c]));
  const inLoadOrder = [...profiles.keys()].map((n) => byName.get(n)!);
  const compiledPolicy = compilePolicy(policy);
  const ruleset = new Ruleset(inLoadOrder, compiledPolicy, files, opts.defaults, new DetectionSet(ratedDetections(detections.values(), compiledPolicy)));
  return { ruleset, sources: ruleSources(detectionSources, policy, profiles), errors: [] };
}

/**
 * Detections with ImagePolicy.severities applied once, here: a re-rated one carries its new severity, one
 * turned "off" is left out, so deciding pays nothing for either.
 */
function ratedDetections(all: Iterable<CompiledDetection>, policy: CompiledPolicy): CompiledDetection[] {
  const out: CompiledDetection[] = [];
  for (const d of all) {
    const o = policy.severities.get(d.id);
    if (o !== 'off') out.push(o ? { ...d, severity: o } : d);
  }
  return out;
}

/** A detection as written, with where its exceptions are. */
export interface DetectionSource {
  /** Compiled from its document alone: its own severity, before ImagePolicy.severities. */
  detection: CompiledDetection;
  exceptImages: { pattern: string; re: RegExp; line: number }[];
  exceptProfiles: { name: string; line: number }[];
}

/**
 * Where the parts of a ruleset that turn detections off or re-rate them are written. The Ruleset has
 * these applied and does not keep them; `rules explain` shows them.
 */
export interface RuleSources {
  /** Every detection in load order, as written. */
  detections: readonly DetectionSource[];
  /** ImagePolicy.severities entries for detection ids. */
  detectionSeverities: ReadonlyMap<string, { value: Severity | 'off'; file: string; line: number }>;
  /** Per profile name: its detections.disable ids, inherited ones included, each with the entry that set it (nearest profile first). */
  disabledDetections: ReadonlyMap<string, ReadonlyMap<string, EntryOrigin>>;
}

function detectionSource(detection: CompiledDetection, doc: DetectionDoc, src: SourcedDocument): DetectionSource {
  const images = doc.except?.images ?? [];
  return {
    detection,
    // compileDetection compiled every pattern (or failed): the i-th RegExp is the i-th pattern's.
    exceptImages: images.map((pattern, i) => ({ pattern, re: detection.exceptImages[i], line: locate(src, ['except', 'images', i]).line })),
    exceptProfiles: (doc.except?.profiles ?? []).map((name, i) => ({ name, line: locate(src, ['except', 'profiles', i]).line })),
  };
}

function ruleSources(
  detections: DetectionSource[],
  policy: { doc: ImagePolicyDoc; src: SourcedDocument } | undefined,
  profiles: Map<string, ProfileDoc>,
): RuleSources {
  const detectionSeverities = new Map<string, { value: Severity | 'off'; file: string; line: number }>();
  for (const [id, value] of Object.entries(policy?.doc.severities ?? {})) {
    if (!(id in RULE_CATALOG) && value !== undefined)
      detectionSeverities.set(id, { value, file: policy!.src.file, line: locate(policy!.src, ['severities', id], true).line });
  }
  const disabledDetections = new Map<string, Map<string, EntryOrigin>>();
  for (const name of profiles.keys()) {
    const byId = new Map<string, EntryOrigin>();
    for (const n of lineage(name, profiles)) {
      const p = profiles.get(n)!;
      (p.doc.detections?.disable ?? []).forEach((id, i) => {
        if (!byId.has(id)) byId.set(id, { profile: n, file: p.src.file, line: locate(p.src, ['detections', 'disable', i]).line, entry: id });
      });
    }
    if (byId.size) disabledDetections.set(name, byId);
  }
  return { detections, detectionSeverities, disabledDetections };
}

function checkGlob(value: string, absolute: boolean, src: SourcedDocument, field: FieldPath, errs: ErrorList): void {
  const problem = globProblem(value, { absolute });
  if (problem) errs.add('RW_RULE_BAD_GLOB', `bad glob ${JSON.stringify(value)}: ${problem}`, src, field);
}

function checkProfile({ doc, src }: ProfileDoc, errs: ErrorList): void {
  doc.images.forEach((img, i) => {
    if (/\s/.test(img)) errs.add('RW_RULE_BAD_GLOB', `bad image pattern ${JSON.stringify(img)}: holds white space`, src, ['images', i]);
    else checkGlob(img, false, src, ['images', i], errs);
  });
  (doc.process?.allow ?? []).forEach((entry, i) => {
    if (typeof entry === 'string') return checkGlob(entry, true, src, ['process', 'allow', i], errs);
    checkGlob(entry.exe, true, src, ['process', 'allow', i, 'exe'], errs);
    entry.names.forEach((n, j) => {
      if (n.includes('/') || /[*?[{]/.test(n))
        errs.add('RW_RULE_INVALID', `program name ${JSON.stringify(n)} is a plain name (argv[0]'s base name), not a path or glob`, src, [
          'process',
          'allow',
          i,
          'names',
          j,
        ]);
    });
  });
  (doc.files?.write ?? []).forEach((g, i) => checkGlob(g, true, src, ['files', 'write', i], errs));
  const net = (list: string[] | undefined, key: 'listen' | 'connect') =>
    (list ?? []).forEach((spec, i) => {
      try {
        (key === 'listen' ? parseListenSpec : parseConnectSpec)(spec);
      } catch (err) {
        if (!(err instanceof NetSpecError)) throw err;
        errs.add(err.badAddress ? 'RW_RULE_BAD_CIDR' : 'RW_RULE_INVALID', `bad ${key} entry ${JSON.stringify(spec)}: ${err.message}`, src, ['network', key, i]);
      }
    });
  net(doc.network?.listen, 'listen');
  net(doc.network?.connect, 'connect');
  (doc.posture?.allowCapabilities ?? []).forEach((c, i) => {
    if (!CAPABILITIES.has(normaliseCapability(c)))
      errs.add('RW_RULE_INVALID', `unknown capability ${JSON.stringify(c)}`, src, ['posture', 'allowCapabilities', i]);
  });
  (doc.posture?.allowMounts ?? []).forEach((g, i) => checkGlob(g, true, src, ['posture', 'allowMounts', i], errs));
  (doc.posture?.allowSecretEnv ?? []).forEach((g, i) => checkGlob(g, false, src, ['posture', 'allowSecretEnv', i], errs));
}

function checkPolicy(doc: ImagePolicyDoc, src: SourcedDocument, errs: ErrorList): void {
  (doc.registries ?? []).forEach((r, i) => {
    if (r.includes('/'))
      errs.add('RW_RULE_INVALID', `a registry is a host name (e.g. "acr.acme.example" or "localhost:5000"), not ${JSON.stringify(r)}`, src, ['registries', i]);
    else checkGlob(r, false, src, ['registries', i], errs);
  });
}

/** Checks every `extends` and returns profile names parents-first. Unknown names and cycles are errors. */
function resolveExtends(profiles: Map<string, ProfileDoc>, invalid: ReadonlySet<string>, errs: ErrorList): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, trail: string[]) => {
    const st = state.get(name);
    if (st === 'done') return;
    const p = profiles.get(name)!;
    state.set(name, 'visiting');
    p.doc.extends.forEach((parent, i) => {
      if (!profiles.has(parent)) {
        if (invalid.has(parent)) return;
        errs.add('RW_RULE_EXTENDS', `profile "${name}" extends "${parent}", which is not defined${suggest(parent, [...profiles.keys()])}`, p.src, [
          'extends',
          i,
        ]);
        return;
      }
      if (state.get(parent) === 'visiting') {
        const cycle = [...trail.slice(trail.indexOf(parent)), name, parent];
        errs.add('RW_RULE_EXTENDS', `extends cycle: ${cycle.join(' → ')}`, p.src, ['extends', i]);
        return;
      }
      visit(parent, [...trail, name]);
    });
    state.set(name, 'done');
    order.push(name);
  };
  for (const name of profiles.keys()) visit(name, []);
  return order;
}

function suggest(name: string, known: string[]): string {
  const close = known
    .map((k) => ({ k, d: editDistance(name.toLowerCase(), k.toLowerCase()) }))
    .filter((c) => c.d <= 2)
    .sort((a, b) => a.d - b.d)[0];
  return close ? ` (did you mean "${close.k}"?)` : '';
}

/** Edits (insert, delete, replace, swap of neighbours) from a to b. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The profile and its ancestors, nearest first, each once. */
function lineage(name: string, profiles: Map<string, ProfileDoc>): string[] {
  const out: string[] = [];
  const walk = (n: string) => {
    if (out.includes(n)) return;
    out.push(n);
    for (const parent of profiles.get(n)!.doc.extends) walk(parent);
  };
  walk(name);
  return out;
}

function compileProfile(name: string, profiles: Map<string, ProfileDoc>, verdicts: PathVerdictTable): CompiledProfile {
  const self = profiles.get(name)!;
  const chain = lineage(name, profiles);
  const origin = (p: ProfileDoc, field: FieldPath, entry: string): EntryOrigin => ({
    profile: p.doc.name,
    file: p.src.file,
    line: locate(p.src, field).line,
    entry,
  });
  const paths: EntryOrigin[] = [];
  const multiCall: ConstructorParameters<typeof ProcessAllowlist>[1] = [];
  const writes: EntryOrigin[] = [];
  const listen: NetRule[] = [];
  const connect: NetRule[] = [];
  const mounts: EntryOrigin[] = [];
  const secretEnv: EntryOrigin[] = [];
  const capabilities = new Set<string>();
  const hostNamespaces = new Set<string>();
  const disabledDetections = new Set<string>();
  for (const n of chain) {
    const p = profiles.get(n)!;
    const d = p.doc;
    (d.process?.allow ?? []).forEach((e, i) => {
      if (typeof e === 'string') paths.push(origin(p, ['process', 'allow', i], e));
      else
        multiCall.push({
          exe: compileGlob(e.exe),
          names: e.names,
          origin: origin(p, ['process', 'allow', i], `{ exe: ${e.exe}, names: [${e.names.join(', ')}] }`),
        });
    });
    (d.files?.write ?? []).forEach((g, i) => writes.push(origin(p, ['files', 'write', i], g)));
    (d.network?.listen ?? []).forEach((s, i) => listen.push({ spec: parseListenSpec(s), origin: origin(p, ['network', 'listen', i], s) }));
    (d.network?.connect ?? []).forEach((s, i) => connect.push({ spec: parseConnectSpec(s), origin: origin(p, ['network', 'connect', i], s) }));
    (d.posture?.allowMounts ?? []).forEach((g, i) => mounts.push(origin(p, ['posture', 'allowMounts', i], g)));
    (d.posture?.allowSecretEnv ?? []).forEach((g, i) => secretEnv.push(origin(p, ['posture', 'allowSecretEnv', i], g)));
    for (const c of d.posture?.allowCapabilities ?? []) capabilities.add(normaliseCapability(c));
    for (const ns of d.posture?.allowHostNamespaces ?? []) hostNamespaces.add(ns);
    for (const id of d.detections?.disable ?? []) disabledDetections.add(id);
  }
  // Scalars: the nearest profile that sets one wins.
  const nearest = <T>(get: (d: ImageProfileDoc) => T | undefined): T | undefined => {
    for (const n of chain) {
      const v = get(profiles.get(n)!.doc);
      if (v !== undefined) return v;
    }
    return undefined;
  };
  const images: ImagePattern[] = self.doc.images.map((source, i) => {
    const normalised = normaliseImagePattern(source);
    const re = new Minimatch(normalised, { nonegate: true, nocomment: true }).makeRe() as RegExp;
    return { source, normalised, re, literalLength: literalLength(normalised), line: locate(self.src, ['images', i]).line };
  });
  const resources: Partial<Thresholds> = {};
  const cpu = nearest((d) => d.resources?.cpuHighPercent);
  const mem = nearest((d) => d.resources?.memoryHighPercent);
  if (cpu !== undefined) resources.cpuHighPercent = cpu;
  if (mem !== undefined) resources.memoryHighPercent = mem;
  return {
    name,
    file: self.src.file,
    line: locate(self.src, ['name']).line,
    ...(self.doc.description !== undefined && { description: self.doc.description }),
    images,
    ancestors: chain.slice(1),
    process: new ProcessAllowlist(paths, multiCall, verdicts),
    driftAlert: (nearest((d) => d.process?.drift) ?? 'alert') === 'alert',
    writes: new PathMatcher(writes, verdicts),
    listen,
    connect,
    posture: {
      allowRoot: nearest((d) => d.posture?.allowRoot) ?? false,
      allowPrivileged: nearest((d) => d.posture?.allowPrivileged) ?? false,
      allowWritableRootfs: nearest((d) => d.posture?.allowWritableRootfs) ?? false,
      capabilities,
      hostNamespaces,
      mounts: new PathMatcher(mounts),
      secretEnv: new PathMatcher(secretEnv),
    },
    resources,
    disabledDetections,
  };
}

function compilePolicy(p: { doc: ImagePolicyDoc; src: SourcedDocument } | undefined): CompiledPolicy {
  if (!p) return { unprofiled: 'alert', requireDigest: false, severities: new Map() };
  const d = p.doc;
  const out: CompiledPolicy = {
    unprofiled: d.unprofiled,
    requireDigest: d.requireDigest,
    severities: new Map(Object.entries(d.severities)),
    file: p.src.file,
    line: p.src.line,
  };
  if (d.registries) {
    out.registryList = d.registries.map((r) => r.toLowerCase());
    out.registries = new PathMatcher(
      d.registries.map((r, i) => ({ profile: 'ImagePolicy', file: p.src.file, line: locate(p.src, ['registries', i]).line, entry: r.toLowerCase() })),
    );
  }
  if (d.maxImageAgeDays !== undefined) out.maxImageAgeDays = d.maxImageAgeDays;
  return out;
}

/** Loads and compiles the rules behind `paths`; throws RunwatchErrors listing every problem. */
export function loadRuleset(paths: readonly string[], opts: CompileOptions): Ruleset {
  return loadRulesWithSources(paths, opts).ruleset;
}

/** loadRuleset, plus where detections are turned off or re-rated (for `rules explain`). */
export function loadRulesWithSources(paths: readonly string[], opts: CompileOptions): { ruleset: Ruleset; sources: RuleSources } {
  const loaded = loadRuleDocuments(paths);
  const { ruleset, sources, errors } = compileRuleset(loaded.docs, opts, loaded.files, loaded.invalidProfiles);
  if (loaded.errors.length || !ruleset || !sources) throw new RunwatchErrors([...loaded.errors, ...errors]);
  return { ruleset, sources };
}
