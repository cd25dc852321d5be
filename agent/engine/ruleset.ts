import type { Severity } from '../events/types.js';
import { DetectionSet } from './detections.js';
import { parseImageRef } from './image-ref.js';
import { specMatches, type Endpoint, type NetSpec } from './net-spec.js';
import { braceExpand, Minimatch } from 'minimatch';
import { GLOB_OPTIONS, PathMatcher, type EntryOrigin } from './path-matcher.js';
import type { PathVerdictTable } from './path-verdicts.js';
import { RULE_CATALOG, type RuleId } from './rule-schema.js';

/** Executables that pick their behaviour from argv[0]; their allow hints name the program. */
export const MULTI_CALL_BINARIES = new Set(['busybox', 'toybox']);

export interface Thresholds {
  cpuHighPercent: number;
  memoryHighPercent: number;
}

/** The kernel keeps this many characters of a program's name as a task's comm. */
const COMM_LENGTH = 15;

/** Process allow entries: paths (any program name) and multi-call entries (only the listed names). */
export class ProcessAllowlist {
  readonly paths: PathMatcher;
  private readonly exactExe = new Map<string, Map<string, EntryOrigin>>();
  private readonly globExe: { re: RegExp; names: Map<string, EntryOrigin> }[] = [];
  private programNames?: { exact: Map<string, EntryOrigin>; globs: { re: RegExp; origin: EntryOrigin }[] };

  constructor(
    private readonly pathEntries: EntryOrigin[],
    private readonly multiCall: { exe: { exact?: string[]; re?: RegExp }; names: string[]; origin: EntryOrigin }[],
    table?: PathVerdictTable,
  ) {
    this.paths = new PathMatcher(pathEntries, table);
    for (const m of multiCall) {
      const names = new Map(m.names.map((n) => [n, m.origin] as const));
      for (const exe of m.exe.exact ?? []) {
        const have = this.exactExe.get(exe) ?? new Map<string, EntryOrigin>();
        for (const [n, o] of names) if (!have.has(n)) have.set(n, o);
        this.exactExe.set(exe, have);
      }
      if (m.exe.re) this.globExe.push({ re: m.exe.re, names });
    }
  }

  /** Whether `exe`, run as program `name` (a function when costly to find), is allowed by any entry. */
  allows(exe: string, name: string | (() => string)): boolean {
    return this.paths.matches(exe) || (this.hasMultiCall && this.allowsAs(exe, typeof name === 'string' ? name : name()));
  }

  /** Some entry allows programs by name (then `allowsAs` may allow what `paths` does not). */
  get hasMultiCall(): boolean {
    return this.exactExe.size > 0 || this.globExe.length > 0;
  }

  /** Allowed by a multi-call entry for this program name (callers check `paths` first: most decisions end there). */
  allowsAs(exe: string, name: string): boolean {
    if (this.exactExe.get(exe)?.has(name)) return true;
    for (let i = 0; i < this.globExe.length; i++) if (this.globExe[i].names.has(name) && this.globExe[i].re.test(exe)) return true;
    return false;
  }

  explain(exe: string, name: string): EntryOrigin | undefined {
    return this.paths.explain(exe) ?? this.exactExe.get(exe)?.get(name) ?? this.globExe.find((g) => g.names.has(name) && g.re.test(exe))?.names.get(name);
  }

  /** Some entry restricts this executable by program name (so hints should, too). */
  hasMultiCallEntry(exe: string): boolean {
    return this.exactExe.has(exe) || this.globExe.some((g) => g.re.test(exe));
  }

  /** Program names allowed through `exe`, for messages. */
  namesFor(exe: string): string[] {
    const out = new Set(this.exactExe.get(exe)?.keys() ?? []);
    for (const g of this.globExe) if (g.re.test(exe)) for (const n of g.names.keys()) out.add(n);
    return [...out].sort();
  }

  /**
   * An entry that allows some program whose kernel task name (comm: the file name it was run by, cut to
   * 15 characters) is `comm`: what can still be said of an exec whose executable could not be read.
   */
  entryForTaskName(comm: string): EntryOrigin | undefined {
    const names = (this.programNames ??= this.collectProgramNames());
    return names.exact.get(comm) ?? names.globs.find((g) => g.re.test(comm))?.origin;
  }

  private collectProgramNames(): NonNullable<ProcessAllowlist['programNames']> {
    const exact = new Map<string, EntryOrigin>();
    const globs: { re: RegExp; origin: EntryOrigin }[] = [];
    const add = (name: string, origin: EntryOrigin) => {
      const comm = name.slice(0, COMM_LENGTH);
      if (!exact.has(comm)) exact.set(comm, origin);
    };
    for (const origin of this.pathEntries) {
      for (const expansion of braceExpand(origin.entry)) {
        const name = expansion.slice(expansion.lastIndexOf('/') + 1);
        if (!/[*?[\]()!+@\\]/.test(name)) add(name, origin);
        else if (/[^*?]/.test(name)) {
          // "/opt/app/bin/*" says nothing of a name; "python3*" does.
          const re = new Minimatch(name, GLOB_OPTIONS).makeRe();
          if (re) globs.push({ re, origin });
        }
      }
    }
    for (const m of this.multiCall) for (const n of m.names) add(n, m.origin);
    return { exact, globs };
  }

  get size(): number {
    let n = this.paths.size;
    for (const m of this.exactExe.values()) n += m.size;
    for (const g of this.globExe) n += g.names.size;
    return n;
  }
}

export interface NetRule {
  spec: NetSpec;
  origin: EntryOrigin;
}

/** The first entry that allows a socket, or undefined. */
export function netRuleFor(rules: readonly NetRule[], proto: 'tcp' | 'udp', ep: Endpoint): NetRule | undefined {
  for (let i = 0; i < rules.length; i++) if (specMatches(rules[i].spec, proto, ep)) return rules[i];
  return undefined;
}

export interface ImagePattern {
  /** As written in `images:`. */
  source: string;
  /** After normalisation, e.g. "docker.io/library/nginx{,:*,@*}". */
  normalised: string;
  re: RegExp;
  literalLength: number;
  line: number;
}

/** A profile with everything it inherits merged in and compiled. */
export interface CompiledProfile {
  name: string;
  file: string;
  line: number;
  description?: string;
  images: ImagePattern[];
  /** Every profile it inherits from, nearest first. */
  ancestors: string[];
  process: ProcessAllowlist;
  driftAlert: boolean;
  writes: PathMatcher;
  listen: NetRule[];
  connect: NetRule[];
  posture: {
    allowRoot: boolean;
    allowPrivileged: boolean;
    allowWritableRootfs: boolean;
    capabilities: Set<string>;
    hostNamespaces: Set<string>;
    mounts: PathMatcher;
    secretEnv: PathMatcher;
  };
  resources: Partial<Thresholds>;
  /** Detection ids turned off for this profile (detections.disable, with inherited ones). */
  disabledDetections: ReadonlySet<string>;
}

export interface CompiledPolicy {
  /** undefined = any registry. */
  registries?: PathMatcher;
  registryList?: string[];
  unprofiled: 'alert' | 'ignore';
  requireDigest: boolean;
  maxImageAgeDays?: number;
  severities: ReadonlyMap<string, Severity | 'off'>;
  file?: string;
  line?: number;
}

export interface ProfileMatch {
  profile: CompiledProfile;
  pattern: ImagePattern;
  /** The reference (or repo digest) that matched. */
  candidate: string;
}

/** The image reference and digests a profile is resolved from. */
export interface ImageIdentity {
  image: string;
  imageId: string;
  imageRepoDigests?: readonly string[];
}

const CACHE_LIMIT = 10_000;

/**
 * The compiled, immutable rules. The only mutable part is a memo of which profile each image resolves
 * to; it never changes an answer, only how fast it comes.
 */
export class Ruleset {
  private readonly profileCache = new Map<string, { imageId: string; match: ProfileMatch | undefined }>();
  private readonly withImages: CompiledProfile[];
  private readonly severityOverrides: ReadonlyMap<string, Severity | 'off'>;

  constructor(
    readonly profiles: readonly CompiledProfile[],
    readonly policy: CompiledPolicy,
    readonly files: readonly string[],
    readonly defaults: Thresholds,
    /** Known-bad behaviour checked in every container (Detection documents). */
    readonly detections: DetectionSet = new DetectionSet([]),
  ) {
    this.withImages = profiles.filter((p) => p.images.length > 0);
    this.severityOverrides = policy.severities;
  }

  /** The rule's severity after the policy's overrides; undefined when the policy turned it off. */
  severity(rule: RuleId): Severity | undefined {
    const o = this.severityOverrides.get(rule);
    if (o === 'off') return undefined;
    return o ?? RULE_CATALOG[rule].severity;
  }

  /** Whether the policy overrides this rule's severity (then per-finding severities give way). */
  severityOverridden(rule: RuleId): boolean {
    return this.severityOverrides.has(rule);
  }

  profile(name: string): CompiledProfile | undefined {
    return this.profiles.find((p) => p.name === name);
  }

  /**
   * The profile for a container's image: of all profiles with a matching pattern, the one whose pattern
   * has the most literal characters (the most specific); ties go to the one loaded first.
   */
  profileFor(img: ImageIdentity): ProfileMatch | undefined {
    const cached = this.profileCache.get(img.image);
    if (cached && cached.imageId === img.imageId) return cached.match;
    const match = this.resolve(img);
    if (this.profileCache.size >= CACHE_LIMIT) this.profileCache.clear();
    this.profileCache.set(img.image, { imageId: img.imageId, match });
    return match;
  }

  private resolve(img: ImageIdentity): ProfileMatch | undefined {
    const candidates = [parseImageRef(img.image).normalised, ...(img.imageRepoDigests ?? []).map((d) => parseImageRef(d).normalised)];
    let best: ProfileMatch | undefined;
    for (const profile of this.withImages) {
      for (const pattern of profile.images) {
        if (best && pattern.literalLength <= best.pattern.literalLength) continue;
        const candidate = candidates.find((c) => pattern.re.test(c));
        if (candidate !== undefined) best = { profile, pattern, candidate };
      }
    }
    return best;
  }

  summary(): { files: number; profiles: number; entries: number; detections: number; policy: string } {
    let entries = 0;
    for (const p of this.profiles) entries += p.process.size + p.writes.size + p.listen.length + p.connect.length;
    return {
      files: this.files.length,
      profiles: this.profiles.length,
      entries,
      detections: this.detections.size,
      policy: this.policy.file ? `${this.policy.file}:${this.policy.line}` : 'defaults',
    };
  }
}
