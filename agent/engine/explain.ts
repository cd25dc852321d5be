import path from 'node:path';
import type { ContainerInfo, FileChangeEvent, Finding, ProcessAncestor, Severity } from '../events/types.js';
import { decide } from './decide.js';
import { DetectionSet, type DetectionEvent } from './detections.js';
import { parseImageRef } from './image-ref.js';
import { NetSpecError, parseConnectSpec, parseEndpoint, parseListenSpec, type NetSpec } from './net-spec.js';
import type { EntryOrigin } from './path-matcher.js';
import type { DetectionSource, RuleSources } from './rule-compiler.js';
import { netRuleFor, type CompiledProfile, type Ruleset } from './ruleset.js';

/** One image and the activities asked about; every field but `image` is optional. */
export interface ExplainQuery {
  image: string;
  exe?: string;
  /** Program name (argv[0]) for multi-call binaries; default: the exe's base name. */
  name?: string;
  /** Arguments after argv[0]. */
  args?: string[];
  /** The parent, then its parent …: names ("nginx") or executable paths ("/usr/sbin/nginx"). */
  parents?: string[];
  uid?: number;
  /** The process has a controlling terminal. */
  tty?: boolean;
  /** Its stdin or stdout is a network socket. */
  stdioSocket?: boolean;
  /** The executable was written after the container started. */
  drift?: boolean;
  write?: string;
  /** The write is a chmod to this mode (permission bits, e.g. 0o4755). */
  chmod?: number;
  /** The written path is a new symlink to this target. */
  linkTo?: string;
  /** "tcp:8080" or "tcp:127.0.0.1:8080" */
  listen?: string;
  /** "tcp:10.1.2.3:5432", "udp:[fd00::1]:53" */
  connect?: string;
}

/** Why a detection does not fire for this image. */
export type DetectionOffReason =
  | { by: 'ImagePolicy.severities'; file: string; line: number }
  | { by: 'detections.disable'; profile: string; file: string; line: number }
  | { by: 'except.profiles'; profile: string; file: string; line: number }
  | { by: 'except.images'; pattern: string; file: string; line: number };

export interface FiredDetection {
  id: string;
  title: string;
  description: string;
  severity: Severity;
  /** Set when ImagePolicy.severities re-rated it: the detection's own severity. */
  defaultSeverity?: Severity;
  mitre: string;
  file: string;
  line: number;
  /** The alert message it would send. */
  message: string;
}

export interface ExplainedActivity {
  /** What was asked, e.g. `exe /bin/busybox as "nc"`. */
  label: string;
  /** The event decided, as a sensor would report it. */
  event: DetectionEvent;
  allowlist:
    | { verdict: 'allowed'; profile: string; by?: EntryOrigin }
    | { verdict: 'not_allowed'; findings: Finding[] }
    /** No profile applies to the image. */
    | { verdict: 'not_checked' };
  /** Detections that would fire. */
  detections: FiredDetection[];
  /** Detections whose condition holds but which are off for this image. */
  suppressed: { id: string; reasons: DetectionOffReason[] }[];
}

/** Everything `rules explain` says, as data (`--json`); renderExplanation makes the text. */
export interface Explanation {
  image: { reference: string; normalised: string; registry?: string };
  profile?: { name: string; file: string; line: number; extends: string[]; pattern: { source: string; line: number; normalised: string } };
  policy: { file?: string; line?: number; findings: Finding[] };
  detections: {
    loaded: number;
    files: string[];
    /** Detections that never fire for this image, with every reason. */
    off: { id: string; reasons: DetectionOffReason[] }[];
    /** Detections whose severity ImagePolicy.severities changed. */
    rerated: { id: string; severity: Severity; defaultSeverity: Severity; file: string; line: number }[];
  };
  activities: ExplainedActivity[];
  /** Some activity asked about would raise a finding (allowlist or detection). */
  wouldAlert: boolean;
}

const CONTAINER_ID = 'e'.repeat(64);
/** Linux keeps 15 characters of a task name. */
const COMM_LENGTH = 15;
const SETID_AND_STICKY = 0o7000;

function rel(file: string): string {
  const r = path.relative(process.cwd(), file);
  return r.startsWith('..') ? file : r;
}

function at(o: { file: string; line: number }): string {
  return `${rel(o.file)}:${o.line}`;
}

/** A concrete address for a connect/listen spec given as a query (ranges and * are not questions). */
function endpointOf(spec: NetSpec, kind: string): string {
  if (spec.portLo !== spec.portHi || spec.proto === '*') throw new NetSpecError(`--${kind} takes one protocol and one port, e.g. tcp:8080`);
  if (!spec.addr) return `0.0.0.0:${spec.portLo}`;
  if (spec.addr.prefix !== (spec.addr.v === 4 ? 32 : 128)) throw new NetSpecError(`--${kind} takes one address, not a range`);
  const src = spec.source;
  const addr = src.slice(src.indexOf(':') + 1, src.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return addr.includes(':') ? `[${addr}]:${spec.portLo}` : `${addr}:${spec.portLo}`;
}

function explainContainer(image: string): ContainerInfo {
  const ref = parseImageRef(image);
  return {
    id: CONTAINER_ID,
    name: 'explain',
    image,
    imageId: `sha256:${'e'.repeat(64)}`,
    imageRepoDigests: ref.digest ? [`${ref.repository}@${ref.digest}`] : [],
    created: new Date().toISOString(),
    running: true,
    pid: 1,
    user: '',
    privileged: false,
    capAdd: [],
    capDrop: [],
    hostNamespaces: { pid: false, net: false, ipc: false, uts: false, userns: false },
    networkMode: 'none',
    mounts: [],
    readOnlyRootfs: true,
    envNames: [],
    memoryLimit: 0,
    cpuLimit: 0,
  };
}

/** Why each detection is off for this image (profile and image as given); ids without a reason are on. */
function offReasons(sources: RuleSources, profile: CompiledProfile | undefined, imageCandidates: readonly string[]): Map<string, DetectionOffReason[]> {
  const out = new Map<string, DetectionOffReason[]>();
  for (const s of sources.detections) {
    const id = s.detection.id;
    const reasons: DetectionOffReason[] = [];
    const sev = sources.detectionSeverities.get(id);
    if (sev?.value === 'off') reasons.push({ by: 'ImagePolicy.severities', file: sev.file, line: sev.line });
    if (profile) {
      const disabled = sources.disabledDetections.get(profile.name)?.get(id);
      if (disabled) reasons.push({ by: 'detections.disable', profile: disabled.profile, file: disabled.file, line: disabled.line });
      const except = s.exceptProfiles.find((e) => e.name === profile.name);
      if (except) reasons.push({ by: 'except.profiles', profile: except.name, file: s.detection.file, line: except.line });
    }
    const image = s.exceptImages.find((e) => imageCandidates.some((c) => e.re.test(c)));
    if (image) reasons.push({ by: 'except.images', pattern: image.pattern, file: s.detection.file, line: image.line });
    if (reasons.length) out.set(id, reasons);
  }
  return out;
}

/** The detections as written without their exceptions: what matches before profiles, exceptions and the policy have their say. */
function unexceptedDetections(sources: RuleSources): DetectionSet {
  return new DetectionSet(sources.detections.map((s) => ({ ...s.detection, exceptImages: [], exceptProfiles: new Set<string>() })));
}

/** Which profile applies to an image, which detections are off for it, and what each activity asked about would raise. */
export function explain(rules: { ruleset: Ruleset; sources: RuleSources }, q: ExplainQuery): Explanation {
  const { ruleset: rs, sources } = rules;
  const ref = parseImageRef(q.image);
  const info = explainContainer(q.image);
  const match = rs.profileFor(info);
  const p = match?.profile;
  const now = Date.now();
  const policyFindings = decide(rs, { kind: 'container', ts: now, action: 'start', containerId: CONTAINER_ID, info }, { container: info }).filter((f) =>
    f.rule.startsWith('image.'),
  );

  const candidates = [ref.normalised, ...(info.imageRepoDigests ?? []).map((d) => parseImageRef(d).normalised)];
  const off = offReasons(sources, p, candidates);
  const byId = new Map<string, DetectionSource>(sources.detections.map((s) => [s.detection.id, s]));
  const rerated: Explanation['detections']['rerated'] = [];
  for (const [id, s] of sources.detectionSeverities) {
    const d = byId.get(id)?.detection;
    if (d && s.value !== 'off') rerated.push({ id, severity: s.value, defaultSeverity: d.severity, file: s.file, line: s.line });
  }
  const matcher = unexceptedDetections(sources);

  const activities: ExplainedActivity[] = [];
  const ask = (label: string, ev: DetectionEvent, allowedBy: (p: CompiledProfile) => EntryOrigin | undefined) => {
    const findings = decide(rs, ev, { container: info });
    const detected = findings.filter((f) => byId.has(f.rule));
    const allowlistFindings = findings.filter((f) => !byId.has(f.rule));
    const fired = new Set(detected.map((f) => f.rule));
    const matched = matcher.findings(ev, info, undefined);
    activities.push({
      label,
      event: ev,
      allowlist: !p
        ? { verdict: 'not_checked' }
        : allowlistFindings.length
          ? { verdict: 'not_allowed', findings: allowlistFindings }
          : { verdict: 'allowed', profile: p.name, ...withBy(allowedBy(p)) },
      detections: detected.map((f) => firedDetection(f, byId.get(f.rule)!)),
      suppressed: matched.filter((f) => !fired.has(f.rule)).map((f) => ({ id: f.rule, reasons: off.get(f.rule) ?? [] })),
    });
  };

  if (q.exe !== undefined) {
    const exe = q.exe;
    const name = q.name ?? path.posix.basename(exe);
    const ancestors: ProcessAncestor[] = (q.parents ?? []).map((parent, i) => ({
      pid: 100 - i,
      exe: parent,
      comm: path.posix.basename(parent).slice(0, COMM_LENGTH),
    }));
    const ev: DetectionEvent = {
      kind: 'process_exec',
      ts: now,
      containerId: CONTAINER_ID,
      pid: 200,
      ppid: ancestors[0]?.pid ?? 1,
      exe,
      args: [name, ...(q.args ?? [])],
      argv0: name,
      comm: name.slice(0, COMM_LENGTH),
      uid: q.uid ?? 0,
      ancestors,
      resolved: true,
      ...(q.tty && { tty: '/dev/pts/0' }),
      ...(q.stdioSocket && { stdioSocket: true }),
      ...(q.drift && { inUpperLayer: true }),
    };
    ask(`exe ${exe}${q.name ? ` as "${q.name}"` : ''}`, ev, (pr) => pr.process.explain(exe, name));
  }
  if (q.write !== undefined) {
    const file = q.write;
    const { label, change } = fileChange(file, q);
    ask(label, { kind: 'file_change', ts: now, containerId: CONTAINER_ID, path: file, ...change }, (pr) => pr.writes.explain(file));
  }
  const net = (direction: 'listen' | 'connect', query: string) => {
    const spec = (direction === 'listen' ? parseListenSpec : parseConnectSpec)(query);
    if (direction === 'connect' && !spec.addr) throw new NetSpecError('--connect takes an address, e.g. tcp:10.1.2.3:5432');
    const endpoint = endpointOf(spec, direction);
    const protocol = spec.proto === 'udp' ? 'udp' : 'tcp';
    const ev: DetectionEvent =
      direction === 'listen'
        ? { kind: 'net_socket', ts: now, containerId: CONTAINER_ID, protocol, direction, local: endpoint }
        : { kind: 'net_socket', ts: now, containerId: CONTAINER_ID, protocol, direction, local: '0.0.0.0:40000', remote: endpoint };
    ask(`${direction} ${query}`, ev, (pr) => netRuleFor(pr[direction], protocol, parseEndpoint(endpoint)!)?.origin);
  };
  if (q.listen !== undefined) net('listen', q.listen);
  if (q.connect !== undefined) net('connect', q.connect);

  return {
    image: { reference: q.image, normalised: ref.normalised, ...(ref.registry && { registry: ref.registry }) },
    ...(match &&
      p && {
        profile: {
          name: p.name,
          file: p.file,
          line: p.line,
          extends: p.ancestors,
          pattern: { source: match.pattern.source, line: match.pattern.line, normalised: match.pattern.normalised },
        },
      }),
    policy: { ...(rs.policy.file && { file: rs.policy.file, line: rs.policy.line ?? 1 }), findings: policyFindings },
    detections: {
      loaded: sources.detections.length,
      files: [...new Set(sources.detections.map((s) => s.detection.file))],
      off: [...off].map(([id, reasons]) => ({ id, reasons })),
      rerated,
    },
    activities,
    wouldAlert: activities.some((a) => a.allowlist.verdict === 'not_allowed' || a.detections.length > 0),
  };
}

const REGULAR_FILE = 0o100000;
const SYMLINK = 0o120777;

/** A write as the file sensor reports it: a modification, a chmod (the mode before without setid and sticky bits) or a new symlink. */
function fileChange(file: string, q: ExplainQuery): { label: string; change: Pick<FileChangeEvent, 'op' | 'mode' | 'previousMode' | 'linkTarget'> } {
  if (q.chmod !== undefined) {
    return {
      label: `chmod ${q.chmod.toString(8).padStart(4, '0')} ${file}`,
      change: { op: 'chmod', mode: REGULAR_FILE | q.chmod, previousMode: REGULAR_FILE | (q.chmod & ~SETID_AND_STICKY) },
    };
  }
  if (q.linkTo !== undefined) return { label: `symlink ${file} → ${q.linkTo}`, change: { op: 'create', mode: SYMLINK, linkTarget: q.linkTo } };
  return { label: `write ${file}`, change: { op: 'modify' } };
}

function withBy(by: EntryOrigin | undefined): { by?: EntryOrigin } {
  return by ? { by } : {};
}

function firedDetection(f: Finding, s: DetectionSource): FiredDetection {
  const d = s.detection;
  return {
    id: d.id,
    title: d.title,
    description: d.description,
    severity: f.severity,
    ...(f.severity !== d.severity && { defaultSeverity: d.severity }),
    mitre: d.mitre,
    file: d.file,
    line: d.line,
    message: f.message,
  };
}

function offReasonText(r: DetectionOffReason): string {
  switch (r.by) {
    case 'ImagePolicy.severities':
      return `ImagePolicy.severities (${at(r)})`;
    case 'detections.disable':
      return `detections.disable of profile ${r.profile} (${at(r)})`;
    case 'except.profiles':
      return `its except.profiles: ${r.profile} (${at(r)})`;
    case 'except.images':
      return `its except.images: "${r.pattern}" (${at(r)})`;
  }
}

function reasonsText(reasons: readonly DetectionOffReason[]): string {
  return reasons.length ? reasons.map(offReasonText).join('; ') : 'off for this image';
}

const INDENT = '         ';

/** The text of an explanation, as `runwatch rules explain` prints it. */
export function renderExplanation(e: Explanation): string[] {
  const lines: string[] = [];
  lines.push(`image    ${e.image.reference} → ${e.image.normalised}${e.image.registry ? ` (registry ${e.image.registry})` : ''}`);
  const p = e.profile;
  if (p) {
    lines.push(`profile  ${p.name} (${at(p)}), matched by images: "${p.pattern.source}" at line ${p.pattern.line} (as ${p.pattern.normalised})`);
    if (p.extends.length) lines.push(`${INDENT}extends ${p.extends.join(' → ')}`);
  } else {
    lines.push(`profile  none: no ImageProfile's images match ${e.image.normalised}; no allowlist checks the activity of its containers (detections still do)`);
  }
  lines.push(`policy${e.policy.file ? ` (${at({ file: e.policy.file, line: e.policy.line ?? 1 })})` : ' (defaults: no ImagePolicy loaded)'}`);
  if (e.policy.findings.length === 0) lines.push(`${INDENT}image policy: nothing to report`);
  for (const f of e.policy.findings) lines.push(`${INDENT}${f.rule} (${f.severity}): ${f.message}`);

  const d = e.detections;
  if (d.loaded === 0) lines.push('detections none loaded');
  else {
    const on = d.loaded - d.off.length;
    const summary = d.off.length ? `${on} on for this image, ${d.off.length} off` : 'all on for this image';
    lines.push(`detections ${d.loaded} loaded (${d.files.map(rel).join(', ')}): ${summary}${d.rerated.length ? `, ${d.rerated.length} re-rated` : ''}`);
    for (const o of d.off) lines.push(`${INDENT}${o.id}: off by ${reasonsText(o.reasons)}`);
    for (const r of d.rerated) lines.push(`${INDENT}${r.id}: ${r.severity} (default ${r.defaultSeverity}) by ImagePolicy.severities (${at(r)})`);
  }

  for (const a of e.activities) {
    const al = a.allowlist;
    switch (al.verdict) {
      case 'not_checked':
        lines.push(`${a.label}: not checked (no profile applies)`);
        break;
      case 'allowed':
        lines.push(`${a.label}: ALLOWED by ${al.by ? `"${al.by.entry}" of profile ${al.by.profile} (${at(al.by)})` : `profile ${al.profile}`}`);
        break;
      case 'not_allowed':
        for (const f of al.findings) {
          lines.push(`${a.label}: NOT ALLOWED → ${f.rule} (${f.severity})`, `${INDENT}${f.message}`, `${INDENT}to allow it, add under ${f.decidedBy}:`);
          lines.push(`${INDENT}  ${f.allowHint}`);
        }
        break;
    }
    for (const f of a.detections) {
      const rated = f.defaultSeverity ? `, re-rated from ${f.defaultSeverity};` : ',';
      lines.push(`${a.label}: DETECTED → ${f.id} (${f.severity}${rated} MITRE ${f.mitre}) at ${at(f)}`, `${INDENT}${f.message}`, `${INDENT}${f.description}`);
      if (p) lines.push(`${INDENT}to turn it off for this image, add under detections.disable of profile ${p.name}:`, `${INDENT}  - ${f.id}`);
      else
        lines.push(
          `${INDENT}to turn it off for this image: a profile for it with detections: { disable: [${f.id}] }, or its image under except.images of the detection`,
        );
    }
    for (const s of a.suppressed) lines.push(`${a.label}: ${s.id} matches, but is off for this image by ${reasonsText(s.reasons)}`);
    if (a.detections.length === 0 && a.suppressed.length === 0) lines.push(`${a.label}: no detection matches`);
  }
  return lines;
}
