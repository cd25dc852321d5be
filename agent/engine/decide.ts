import type {
  ContainerInfo,
  ContainerLifecycleEvent,
  FileChangeEvent,
  Finding,
  NetSocketEvent,
  ProcessExecEvent,
  ResourceSampleEvent,
  RunwatchEvent,
} from '../events/types.js';
import { assertNever } from '../events/types.js';
import { auditFindings } from './audit-decider.js';
import type { DecisionContext } from './engine.js';
import { containerFindings } from './container-checks.js';
import type { DetectionEvent } from './detections.js';
import { formatEndpoint, parseEndpoint, protoBase } from './net-spec.js';
import { capitalise, finding, globLiteral, where, yamlItem, yamlScalar } from './findings.js';
import { MULTI_CALL_BINARIES, netRuleFor, type CompiledProfile, type Ruleset } from './ruleset.js';

const NONE: Finding[] = Object.freeze([]) as unknown as Finding[];

/**
 * The decision for one event under one ruleset: pure, no I/O, never throws on any event the sensors
 * can produce. Events without a container (host processes) get no allowlist decisions; containers whose
 * image matches no profile get only image, posture, resource and detection findings. Detections
 * (known-bad behaviour) are checked for every container's process, file, network and docker events.
 */
export function decide(rs: Ruleset, ev: RunwatchEvent, ctx: DecisionContext): Finding[] {
  switch (ev.kind) {
    case 'process_exec':
    case 'file_change':
    case 'net_socket':
      return ctx.container ? activityFindings(rs, ev, ctx.container) : NONE;
    case 'resource_sample':
      return ctx.container && ev.scope === 'container' ? resourceFindings(rs, ev, ctx.container) : NONE;
    case 'container':
      return assessOnThisEvent(ev) && ev.info && !ctx.containerAssessed ? containerFindings(rs, ev.info, ev.ts, ctx.previousImage) : NONE;
    case 'docker_action':
      return ctx.container ? withDetections(rs, ev, ctx.container, rs.profileFor(ctx.container)?.profile, auditFindings(ev)) : auditFindings(ev);
    case 'agent_notice':
      return auditFindings(ev);
    case 'process_exit':
      return NONE;
    default:
      return assertNever(ev, 'event kind');
  }
}

/** What a container's process, file or socket activity breaks: its profile's lists, then the detections. */
function activityFindings(rs: Ruleset, ev: ProcessExecEvent | FileChangeEvent | NetSocketEvent, info: ContainerInfo): Finding[] {
  const p = rs.profileFor(info)?.profile;
  let own = NONE;
  if (p) {
    if (ev.kind === 'process_exec') own = processFindings(rs, ev, info, p);
    else if (ev.kind === 'file_change') own = fileFindings(rs, ev, info, p);
    else own = netFindings(rs, ev, info, p);
  }
  return withDetections(rs, ev, info, p, own);
}

function withDetections(rs: Ruleset, ev: DetectionEvent, info: ContainerInfo, profile: CompiledProfile | undefined, findings: Finding[]): Finding[] {
  const detected = rs.detections.findings(ev, info, profile);
  if (detected.length === 0) return findings;
  return findings.length ? [...findings, ...detected] : detected;
}

/** Image and posture are assessed at the first create or start the agent sees of a container. */
export function assessOnThisEvent(ev: ContainerLifecycleEvent): boolean {
  return ev.action === 'create' || ev.action === 'start';
}

function one(f: Finding | undefined): Finding[] {
  return f ? [f] : NONE;
}

function basename(p: string): string {
  const i = p.lastIndexOf('/');
  return i >= 0 ? p.slice(i + 1) : p;
}

/**
 * The program a process runs as: argv[0]'s base name (login shells' leading "-" dropped). For a
 * multi-call binary run by its own name ("busybox sleep 5") it is the first argument.
 */
export function programName(ev: Pick<ProcessExecEvent, 'exe' | 'args' | 'argv0' | 'comm'>, exeName = basename(ev.exe)): string {
  let name = basename(ev.argv0 ?? ev.args[0] ?? '');
  if (name.charCodeAt(0) === 45 /* "-" */) name = name.slice(1);
  if (name === exeName && MULTI_CALL_BINARIES.has(exeName) && ev.args.length > 1) name = basename(ev.args[1]);
  return name || ev.comm || exeName;
}

function processFindings(rs: Ruleset, ev: ProcessExecEvent, info: ContainerInfo, p: CompiledProfile): Finding[] {
  if (ev.exe === '') return unresolvedFindings(rs, ev, info, p);
  const allowed = p.process.paths.matches(ev.exe) || (p.process.hasMultiCall && p.process.allowsAs(ev.exe, programName(ev)));
  const drift = ev.inUpperLayer === true && p.driftAlert;
  if (allowed && !drift) return NONE;
  const out: Finding[] = [];
  if (!allowed) {
    const exeName = basename(ev.exe);
    const name = programName(ev, exeName);
    const multiCall = MULTI_CALL_BINARIES.has(exeName) || p.process.hasMultiCallEntry(ev.exe);
    const shown = multiCall || name !== exeName ? `${ev.exe} as "${name}"` : ev.exe;
    const names = multiCall ? p.process.namesFor(ev.exe) : [];
    const why = names.length ? `profile "${p.name}" allows ${ev.exe} only as ${names.join(', ')}` : `it is not in process.allow of profile "${p.name}"`;
    const f = finding(rs, 'process.not_allowed', {
      message: `Process ${shown} ran in ${where(info)}, but ${why}`,
      profile: p.name,
      decidedBy: 'process.allow',
      allowHint: multiCall ? `- { exe: ${yamlScalar(globLiteral(ev.exe))}, names: [${yamlScalar(name)}] }` : yamlItem(globLiteral(ev.exe)),
      subject: `${ev.exe}\0${name}`,
    });
    if (f) out.push(f);
  }
  if (drift) {
    const f = finding(rs, 'process.drift', {
      message: `Process ${ev.exe} ran in ${where(info)} from a file written after the container started (not part of image ${info.image})`,
      profile: p.name,
      decidedBy: 'process.drift',
      allowHint: 'drift: ignore',
      subject: ev.exe,
    });
    if (f) out.push(f);
  }
  return out;
}

/**
 * An exec whose executable could not be read (the process was gone first) is judged by what is left: its
 * task name, which the kernel takes from the file name it was run by. A name no allowed program has is
 * reported with the pid, uid and parent; a name one has is taken as that program.
 */
function unresolvedFindings(rs: Ruleset, ev: ProcessExecEvent, info: ContainerInfo, p: CompiledProfile): Finding[] {
  const comm = ev.comm ?? '';
  if (comm && p.process.entryForTaskName(comm)) return NONE;
  const parent = ev.ancestors[0];
  const parentText = parent ? `, parent ${parent.exe || parent.comm || '?'} (pid ${parent.pid})` : '';
  const named = comm ? `named "${comm}" ` : '';
  return one(
    finding(rs, 'process.unresolved', {
      message: `A process ${named}(pid ${ev.pid}, uid ${ev.uid}${parentText}) ran in ${where(info)} and exited before its executable could be read; no program in process.allow of profile "${p.name}" has ${comm ? 'that name' : 'a name to go by'}`,
      profile: p.name,
      decidedBy: 'process.allow',
      allowHint: comm
        ? `# add the path of the program "${comm}" to process.allow`
        : '# the program is unknown: see the parent and the process records around it',
      subject: `\0${comm}`,
    }),
  );
}

const FILE_VERBS: Record<FileChangeEvent['op'], string> = { create: 'created', modify: 'modified', delete: 'deleted', chmod: 'chmod-ed' };

function fileFindings(rs: Ruleset, ev: FileChangeEvent, info: ContainerInfo, p: CompiledProfile): Finding[] {
  if (p.writes.matches(ev.path)) return NONE;
  const by = ev.process ? ` by ${ev.process.exe}` : '';
  const found = ev.discovered ? ' (found when watching began)' : '';
  return one(
    finding(rs, 'file.write_not_allowed', {
      message: `File ${ev.path} was ${FILE_VERBS[ev.op]}${by} in ${where(info)}${found}, outside files.write of profile "${p.name}"`,
      profile: p.name,
      decidedBy: 'files.write',
      allowHint: yamlItem(globLiteral(ev.path)),
      // The sensor's directory prefix groups a write storm into few alerts.
      subject: ev.pathPrefix ?? ev.path,
    }),
  );
}

function netFindings(rs: Ruleset, ev: NetSocketEvent, info: ContainerInfo, p: CompiledProfile): Finding[] {
  const proto = protoBase(ev.protocol);
  if (ev.direction === 'listen') {
    const local = parseEndpoint(ev.local);
    if (!local || netRuleFor(p.listen, proto, local)) return NONE;
    return one(
      finding(rs, 'network.listen_not_allowed', {
        message: `${capitalise(where(info))} listens on ${proto} port ${local.port} (${formatEndpoint(local)}), which is not in network.listen of profile "${p.name}"`,
        profile: p.name,
        decidedBy: 'network.listen',
        allowHint: yamlItem(`${proto}:${local.port}`),
        subject: `${proto}:${local.port}`,
      }),
    );
  }
  const remote = parseEndpoint(ev.remote);
  if (!remote || netRuleFor(p.connect, proto, remote)) return NONE;
  const dest = formatEndpoint(remote);
  return one(
    finding(rs, 'network.connect_not_allowed', {
      message: `${capitalise(where(info))} connected to ${proto} ${dest}, which is not in network.connect of profile "${p.name}"`,
      profile: p.name,
      decidedBy: 'network.connect',
      allowHint: yamlItem(`${proto}:${dest}`),
      subject: `${proto}:${dest}`,
    }),
  );
}

function resourceFindings(rs: Ruleset, ev: ResourceSampleEvent, info: ContainerInfo): Finding[] {
  const p = rs.profileFor(info)?.profile;
  const out: Finding[] = [];
  const check = (rule: 'resource.cpu_high' | 'resource.memory_high', key: 'cpuHighPercent' | 'memoryHighPercent', value: number | undefined, what: string) => {
    if (value === undefined || !Number.isFinite(value)) return;
    const own = p?.resources[key];
    const threshold = own ?? rs.defaults[key];
    if (value <= threshold) return;
    const f = finding(rs, rule, {
      message: `${capitalise(where(info))} uses ${round(value)}% ${what} (threshold ${threshold}%${own !== undefined ? ` from profile "${p!.name}"` : ''})`,
      ...(p && { profile: p.name }),
      decidedBy: own !== undefined ? `resources.${key}` : `metrics.${key}`,
      allowHint: `${key}: ${Math.ceil(value)}`,
      details: { percent: round(value), threshold },
      subject: key,
    });
    if (f) out.push(f);
  };
  check('resource.cpu_high', 'cpuHighPercent', ev.cpuPercent, 'CPU');
  check('resource.memory_high', 'memoryHighPercent', ev.memoryPercent, ev.memoryLimitBytes ? 'of its memory limit' : "of the host's memory");
  return out.length ? out : NONE;
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
