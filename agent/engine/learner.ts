import { Minimatch } from 'minimatch';
import type { ContainerInfo, Finding, RunwatchEvent } from '../events/types.js';
import { assertNever } from '../events/types.js';
import { programName } from './decide.js';
import type { Decider } from './engine.js';
import { normaliseImagePattern, parseImageRef } from './image-ref.js';
import { parseEndpoint, parseIp, protoBase, type Endpoint } from './net-spec.js';
import { MULTI_CALL_BINARIES, type ImageIdentity } from './ruleset.js';

/**
 * Turning what containers did into profile entries. The rule for generalising written paths, kept
 * conservative on purpose (a learned profile should allow what was seen, not guess): a directory at least
 * `minDepth` levels deep (/var/cache is 2) under which paths with at least `minSiblings` distinct names
 * directly below it were written becomes "dir/**". The shallowest such directory wins; the directory's
 * own entry (when it was itself created) stays a literal entry, since "dir/**" does not match "dir".
 */
export interface GeneraliseRule {
  minSiblings: number;
  minDepth: number;
}

export const DEFAULT_GENERALISE_RULE: GeneraliseRule = Object.freeze({ minSiblings: 5, minDepth: 2 });

/** Rule ids the learner mutes for the images it learns: everything an allowlist decides. */
export const ACTIVITY_RULES: ReadonlySet<string> = new Set([
  'process.not_allowed',
  'process.drift',
  'process.unresolved',
  'file.write_not_allowed',
  'network.listen_not_allowed',
  'network.connect_not_allowed',
]);

/** A `process.allow` entry as the rule schema takes it. */
export type ProcessEntry = string | { exe: string; names: string[] };

/** One entry of a learned list, with what the comment beside it says. */
export interface LearnedEntry {
  value: ProcessEntry;
  /** Events that needed this entry. */
  count: number;
  /** More for the trailing comment (per-name counts, how many paths a glob stands for). */
  note?: string;
}

export interface LearnedLists {
  process: LearnedEntry[];
  write: LearnedEntry[];
  listen: LearnedEntry[];
  connect: LearnedEntry[];
  /** Seen but not expressible as entries (program names a multi-call entry cannot list); for the reviewer. */
  unlisted: string[];
}

/** What an existing profile already allows; observations it allows are left out of the learned lists. */
export interface AllowCheck {
  process(exe: string, name: string): boolean;
  write(path: string): boolean;
  listen(proto: 'tcp' | 'udp', ep: Endpoint): boolean;
  connect(proto: 'tcp' | 'udp', ep: Endpoint): boolean;
}

interface ProcessTally {
  count: number;
  names: Map<string, number>;
  /** Runs from a file written after the container started (or deleted, or fileless). */
  drift: number;
}

interface SocketTally {
  count: number;
  proto: 'tcp' | 'udp';
  ep: Endpoint;
}

/** Everything observed so far; grows while learning. */
export interface Observations {
  readonly images: readonly string[];
  readonly containers: Set<string>;
  /** Activity events (process, file, socket) of learned containers. */
  events: number;
  /** Process starts whose executable could not be read (gone too soon): not listed. */
  unresolvedExecs: number;
  /** Events of containers not yet in the inventory that could not be held until it knew them (limits). */
  heldDropped: number;
  readonly startedAt: number;
  /** When the last entry-to-be first appeared ("the profile stopped growing …"). */
  lastNewAt?: number;
  readonly processes: Map<string, ProcessTally>;
  readonly writes: Map<string, number>;
  readonly listen: Map<string, SocketTally>;
  readonly connect: Map<string, SocketTally>;
}

export interface ProfileLearnerOptions {
  /** Image globs, as a profile's `images:` takes them; containers of matching images are learned. */
  images: readonly string[];
  now?: () => number;
}

/** Bounds on events held for containers the inventory does not know yet (see ProfileLearner.observe). */
const HELD_CONTAINERS = 256;
const HELD_EVENTS_PER_CONTAINER = 1024;
const HELD_MS = 120_000;
const MATCH_CACHE_LIMIT = 10_000;

/**
 * Watches the pipeline's enriched events (PipelineOptions.onEvent) and keeps what containers of the
 * learned images did: executables (with program names, for busybox-style binaries), written paths,
 * listening ports and outbound destinations, each with its count.
 */
export class ProfileLearner {
  readonly observed: Observations;
  /** Allowlist findings muted for learned containers (see muteLearnedActivity). */
  muted = 0;
  private readonly patterns: RegExp[];
  private readonly now: () => number;
  private readonly verdicts = new Map<string, { imageId: string; learned: boolean }>();
  private readonly held = new Map<string, { since: number; events: RunwatchEvent[] }>();

  constructor(opts: ProfileLearnerOptions) {
    this.now = opts.now ?? Date.now;
    this.patterns = opts.images.map((g) => new Minimatch(normaliseImagePattern(g), { nonegate: true, nocomment: true }).makeRe() as RegExp);
    this.observed = {
      images: [...opts.images],
      containers: new Set(),
      events: 0,
      unresolvedExecs: 0,
      heldDropped: 0,
      startedAt: this.now(),
      processes: new Map(),
      writes: new Map(),
      listen: new Map(),
      connect: new Map(),
    };
  }

  /** Whether a container's image (its reference or one of its repo digests) matches a learned glob. */
  learns(info: ImageIdentity & { id: string }): boolean {
    const cached = this.verdicts.get(info.id);
    if (cached && cached.imageId === info.imageId) return cached.learned;
    const candidates = [parseImageRef(info.image).normalised, ...(info.imageRepoDigests ?? []).map((d) => parseImageRef(d).normalised)];
    const learned = this.patterns.some((re) => candidates.some((c) => re.test(c)));
    if (this.verdicts.size >= MATCH_CACHE_LIMIT) this.verdicts.clear();
    this.verdicts.set(info.id, { imageId: info.imageId, learned });
    return learned;
  }

  /**
   * The pipeline tap. A container's first processes can run before the Docker sensor has put it in the
   * inventory (its start event comes after them), so events with a container id but no context are held
   * for a while and learned once the container is known; short-lived entrypoint steps are not lost.
   */
  observe(ev: RunwatchEvent, container: ContainerInfo | undefined): void {
    if (!container) {
      if (ev.containerId && isActivity(ev)) this.hold(ev.containerId, ev);
      return;
    }
    const held = this.held.get(container.id);
    if (held) this.held.delete(container.id);
    if (!this.learns(container)) return;
    this.observed.containers.add(container.id);
    if (held) for (const e of held.events) this.record(e);
    this.record(ev);
  }

  /** The entries the observations call for, minus what `existing` already allows. */
  lists(rule: GeneraliseRule = DEFAULT_GENERALISE_RULE, existing?: AllowCheck): LearnedLists {
    return learnedLists(this.observed, rule, existing);
  }

  private hold(containerId: string, ev: RunwatchEvent): void {
    const now = this.now();
    for (const [id, h] of this.held) {
      if (now - h.since <= HELD_MS) break; // insertion order = age order
      this.held.delete(id);
    }
    let h = this.held.get(containerId);
    if (!h) {
      if (this.held.size >= HELD_CONTAINERS) {
        const oldest = this.held.keys().next().value as string;
        this.observed.heldDropped += this.held.get(oldest)!.events.length;
        this.held.delete(oldest);
      }
      h = { since: now, events: [] };
      this.held.set(containerId, h);
    }
    if (h.events.length >= HELD_EVENTS_PER_CONTAINER) this.observed.heldDropped++;
    else h.events.push(ev);
  }

  private record(ev: RunwatchEvent): void {
    const o = this.observed;
    switch (ev.kind) {
      case 'process_exec': {
        o.events++;
        if (ev.exe === '') {
          o.unresolvedExecs++;
          return;
        }
        let t = o.processes.get(ev.exe);
        if (!t) {
          t = { count: 0, names: new Map(), drift: 0 };
          o.processes.set(ev.exe, t);
          this.grew();
        }
        t.count++;
        const name = programName(ev);
        if (MULTI_CALL_BINARIES.has(basename(ev.exe)) && !t.names.has(name)) this.grew();
        t.names.set(name, (t.names.get(name) ?? 0) + 1);
        if (ev.inUpperLayer || ev.exeDeleted) t.drift++;
        return;
      }
      case 'file_change':
        o.events++;
        if (!o.writes.has(ev.path)) this.grew();
        o.writes.set(ev.path, (o.writes.get(ev.path) ?? 0) + 1);
        return;
      case 'net_socket': {
        o.events++;
        const proto = protoBase(ev.protocol);
        const ep = parseEndpoint(ev.direction === 'listen' ? ev.local : ev.remote);
        if (!ep) return;
        const list = ev.direction === 'listen' ? o.listen : o.connect;
        const key = ev.direction === 'listen' ? listenSpec(proto, ep) : connectSpec(proto, ep);
        const t = list.get(key);
        if (t) t.count++;
        else {
          list.set(key, { count: 1, proto, ep });
          this.grew();
        }
        return;
      }
      case 'container':
      case 'process_exit':
      case 'docker_action':
      case 'resource_sample':
      case 'agent_notice':
        return;
      default:
        assertNever(ev, 'event kind');
    }
  }

  private grew(): void {
    this.observed.lastNewAt = this.now();
  }
}

function isActivity(ev: RunwatchEvent): boolean {
  return ev.kind === 'process_exec' || ev.kind === 'file_change' || ev.kind === 'net_socket';
}

/**
 * Learning never alerts on its own images' behaviour: allowlist findings for learned containers are
 * dropped (and counted); image policy, posture and resource findings pass.
 */
export function muteLearnedActivity(inner: Decider, learner: ProfileLearner): Decider {
  return {
    decide(ev, ctx): Finding[] {
      const findings = inner.decide(ev, ctx);
      if (findings.length === 0 || !ctx.container || !learner.learns(ctx.container)) return findings;
      const kept = findings.filter((f) => !ACTIVITY_RULES.has(f.rule));
      learner.muted += findings.length - kept.length;
      return kept;
    },
  };
}

/** Builds the learned lists from observations: sorted, so the same observations give the same lists. */
export function learnedLists(o: Observations, rule: GeneraliseRule = DEFAULT_GENERALISE_RULE, existing?: AllowCheck): LearnedLists {
  const out: LearnedLists = { process: [], write: [], listen: [], connect: [], unlisted: [] };
  for (const exe of sortedKeys(o.processes)) {
    const t = o.processes.get(exe)!;
    const drift = t.drift ? `, ${t.drift} from a file written after start (process.drift still alerts)` : '';
    if (!MULTI_CALL_BINARIES.has(basename(exe))) {
      if (existing && [...t.names.keys()].every((n) => existing.process(exe, n))) continue;
      out.process.push({ value: literalGlob(exe), count: t.count, ...(drift && { note: drift.slice(2) }) });
      continue;
    }
    const names = sortedKeys(t.names).filter((n) => !existing?.process(exe, n));
    const listable = names.filter(isPlainName);
    for (const n of names) if (!isPlainName(n)) out.unlisted.push(`${exe} as ${JSON.stringify(n)}`);
    if (listable.length === 0) continue;
    const count = listable.reduce((sum, n) => sum + t.names.get(n)!, 0);
    out.process.push({ value: { exe: literalGlob(exe), names: listable }, count, note: listable.map((n) => `${n} ${t.names.get(n)}`).join(', ') + drift });
  }
  const writes = existing ? new Map([...o.writes].filter(([p]) => !existing.write(p))) : o.writes;
  out.write = generalisePaths(writes, rule);
  const sockets = (list: Map<string, SocketTally>, withAddr: boolean, allowed: ((proto: 'tcp' | 'udp', ep: Endpoint) => boolean) | undefined) =>
    [...list]
      .filter(([, t]) => !allowed?.(t.proto, t.ep))
      .sort((a, b) => compare(socketSortKey(a[1], withAddr), socketSortKey(b[1], withAddr)))
      .map(([spec, t]) => ({ value: spec, count: t.count }));
  out.listen = sockets(o.listen, false, existing?.listen.bind(existing));
  out.connect = sockets(o.connect, true, existing?.connect.bind(existing));
  return out;
}

/** Written paths as entries: literal paths, and "dir/**" where the rule above says so. Sorted. */
export function generalisePaths(paths: ReadonlyMap<string, number>, rule: GeneraliseRule = DEFAULT_GENERALISE_RULE): LearnedEntry[] {
  const children = new Map<string, Set<string>>();
  for (const p of paths.keys()) {
    const parts = segments(p);
    for (let d = rule.minDepth; d < parts.length; d++) {
      const dir = '/' + parts.slice(0, d).join('/');
      let set = children.get(dir);
      if (!set) children.set(dir, (set = new Set()));
      set.add(parts[d]);
    }
  }
  const groups = new Map<string, { count: number; paths: number }>();
  const out: LearnedEntry[] = [];
  for (const p of sortedKeys(paths)) {
    const parts = segments(p);
    let dir: string | undefined;
    for (let d = rule.minDepth; d < parts.length && !dir; d++) {
      const candidate = '/' + parts.slice(0, d).join('/');
      if (children.get(candidate)!.size >= rule.minSiblings) dir = candidate;
    }
    if (!dir) {
      out.push({ value: literalGlob(p), count: paths.get(p)! });
      continue;
    }
    const g = groups.get(dir) ?? { count: 0, paths: 0 };
    g.count += paths.get(p)!;
    g.paths++;
    groups.set(dir, g);
  }
  for (const [dir, g] of groups) out.push({ value: `${literalGlob(dir)}/**`, count: g.count, note: `${g.paths} paths` });
  return out.sort((a, b) => compare(a.value as string, b.value as string));
}

/** "tcp:8080": the port on any address, which is what a listening socket's profile entry needs. */
export function listenSpec(proto: 'tcp' | 'udp', ep: Endpoint): string {
  return `${proto}:${ep.port}`;
}

/** "tcp:127.0.0.1:5432", "tcp:[fd00::1]:443"; IPv4-mapped IPv6 addresses are written as IPv4. */
export function connectSpec(proto: 'tcp' | 'udp', ep: Endpoint): string {
  return `${proto}:${endpointAddr(ep)}:${ep.port}`;
}

function endpointAddr(ep: Endpoint): string {
  const ip = ep.ip ?? parseIp(ep.addr);
  if (ip?.v === 4) return [ip.n >>> 24, (ip.n >>> 16) & 255, (ip.n >>> 8) & 255, ip.n & 255].join('.');
  return `[${ep.addr}]`;
}

/** Protocol, then (for destinations) the address in numeric order, then the port in numeric order. */
function socketSortKey(t: SocketTally, withAddr: boolean): string {
  const ip = t.ep.ip;
  const addr = !withAddr ? '' : !ip ? `z${t.ep.addr}` : ip.v === 4 ? `4${hex(ip.n)}` : `6${ip.w.map(hex).join('')}`;
  return `${t.proto}|${addr}|${String(t.ep.port).padStart(5, '0')}`;
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/** A literal path as a glob matching only itself: every glob character escaped, braces too. */
export function literalGlob(path: string): string {
  return path.replace(/[?*()[\]{}!+@\\]/g, '\\$&');
}

/** A program name the rule schema takes in `names:` (a base name, no glob characters). */
function isPlainName(name: string): boolean {
  return name !== '' && !name.includes('/') && !/[*?[{]/.test(name);
}

function segments(p: string): string[] {
  return p.split('/').filter(Boolean);
}

function basename(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** Code-unit order: the same on every machine and locale. */
export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedKeys<T>(m: ReadonlyMap<string, T>): string[] {
  return [...m.keys()].sort(compare);
}
