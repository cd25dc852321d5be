import path from 'node:path';
import type { ContainerInfo, Finding, RunwatchEvent } from '../events/types.js';
import { decide } from './decide.js';
import { parseImageRef } from './image-ref.js';
import { NetSpecError, parseConnectSpec, parseEndpoint, parseListenSpec, type NetSpec } from './net-spec.js';
import type { EntryOrigin } from './path-matcher.js';
import { netRuleFor, type CompiledProfile, type Ruleset } from './ruleset.js';

export interface ExplainQuery {
  image: string;
  exe?: string;
  /** Program name (argv[0]) for multi-call binaries; default: the exe's base name. */
  name?: string;
  write?: string;
  /** "tcp:8080" or "tcp:127.0.0.1:8080" */
  listen?: string;
  /** "tcp:10.1.2.3:5432", "udp:[fd00::1]:53" */
  connect?: string;
}

export interface Explanation {
  lines: string[];
  /** Some queried activity would raise an alert. */
  wouldAlert: boolean;
}

const CONTAINER_ID = 'e'.repeat(64);

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

/** Which profile applies to an image and why the queried activity would be allowed or not. */
export function explain(rs: Ruleset, q: ExplainQuery): Explanation {
  const lines: string[] = [];
  const ref = parseImageRef(q.image);
  const info: ContainerInfo = {
    id: CONTAINER_ID,
    name: 'explain',
    image: q.image,
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
  lines.push(`image    ${q.image} → ${ref.normalised}${ref.registry ? ` (registry ${ref.registry})` : ''}`);
  const match = rs.profileFor(info);
  const p = match?.profile;
  if (match && p) {
    lines.push(`profile  ${p.name} (${at(p)}), matched by images: "${match.pattern.source}" at line ${match.pattern.line} (as ${match.pattern.normalised})`);
    if (p.ancestors.length) lines.push(`         extends ${p.ancestors.join(' → ')}`);
  } else {
    lines.push(`profile  none: no ImageProfile's images match ${ref.normalised}; no allowlist checks the activity of its containers (detections still do)`);
  }
  const policyAt = rs.policy.file ? ` (${at({ file: rs.policy.file, line: rs.policy.line ?? 1 })})` : ' (defaults: no ImagePolicy loaded)';
  lines.push(`policy${policyAt}`);
  // Image policy findings, as a container started now from this reference would get them (posture aside).
  const imageFindings = decide(rs, { kind: 'container', ts: Date.now(), action: 'start', containerId: CONTAINER_ID, info }, { container: info }).filter((f) =>
    f.rule.startsWith('image.'),
  );
  if (imageFindings.length === 0) lines.push('         image policy: nothing to report');
  for (const f of imageFindings) lines.push(`         ${f.rule} (${f.severity}): ${f.message}`);

  let wouldAlert = false;
  const ask = (label: string, ev: RunwatchEvent, why: (p: CompiledProfile) => EntryOrigin | undefined) => {
    const findings = decide(rs, ev, { container: info }).filter((f) => f.rule !== 'process.drift');
    // Without a profile no allowlist checks it, but detections (rules for every container) still may.
    if (!p && findings.length === 0) lines.push(`${label}: not checked (no profile applies)`);
    else if (findings.length === 0) {
      const o = why(p!);
      lines.push(`${label}: ALLOWED by ${o ? `"${o.entry}" of profile ${o.profile} (${at(o)})` : `profile ${p!.name}`}`);
    }
    if (findings.length === 0) return;
    wouldAlert = true;
    for (const f of findings) lines.push(...describeAlert(label, f));
    if (!p) lines.push(`${label}: no profile applies, so no allowlist checks it`);
  };
  if (q.exe !== undefined) {
    const name = q.name ?? path.posix.basename(q.exe);
    const ev: RunwatchEvent = {
      kind: 'process_exec',
      ts: Date.now(),
      containerId: CONTAINER_ID,
      pid: 2,
      ppid: 1,
      exe: q.exe,
      args: [name],
      argv0: name,
      uid: 0,
      ancestors: [],
      resolved: true,
    };
    ask(`exe ${q.exe}${q.name ? ` as "${q.name}"` : ''}`, ev, (pr) => pr.process.explain(q.exe!, name));
  }
  if (q.write !== undefined) {
    const ev: RunwatchEvent = { kind: 'file_change', ts: Date.now(), containerId: CONTAINER_ID, path: q.write, op: 'modify' };
    ask(`write ${q.write}`, ev, (pr) => pr.writes.explain(q.write!));
  }
  const net = (direction: 'listen' | 'connect', query: string) => {
    const spec = (direction === 'listen' ? parseListenSpec : parseConnectSpec)(query);
    if (direction === 'connect' && !spec.addr) throw new NetSpecError('--connect takes an address, e.g. tcp:10.1.2.3:5432');
    const endpoint = endpointOf(spec, direction);
    const protocol = spec.proto === 'udp' ? 'udp' : 'tcp';
    const ev: RunwatchEvent =
      direction === 'listen'
        ? { kind: 'net_socket', ts: Date.now(), containerId: CONTAINER_ID, protocol, direction, local: endpoint }
        : { kind: 'net_socket', ts: Date.now(), containerId: CONTAINER_ID, protocol, direction, local: '0.0.0.0:40000', remote: endpoint };
    ask(`${direction} ${query}`, ev, (pr) => netRuleFor(pr[direction], protocol, parseEndpoint(endpoint)!)?.origin);
  };
  if (q.listen !== undefined) net('listen', q.listen);
  if (q.connect !== undefined) net('connect', q.connect);
  return { lines, wouldAlert };
}

function describeAlert(label: string, f: Finding): string[] {
  return [
    `${label}: NOT ALLOWED → ${f.rule} (${f.severity})`,
    `         ${f.message}`,
    `         to allow it, add under ${f.decidedBy}:`,
    `           ${f.allowHint}`,
  ];
}
