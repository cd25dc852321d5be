import { randomUUID } from 'node:crypto';
import type { Finding, RunwatchEvent, RunwatchRecord } from '../events/types.js';
import { assertNever } from '../events/types.js';

/** Turns a finding about an event into the record that leaves the agent, with every context the event carries. */
export function buildRecord(ev: RunwatchEvent, f: Finding, host: string): RunwatchRecord {
  const rec: RunwatchRecord = {
    time: new Date(ev.ts).toISOString(),
    kind: f.kind,
    host,
    rule: f.rule,
    severity: f.severity,
    message: f.message,
    id: randomUUID(),
  };
  if (ev.container) rec.container = ev.container;
  if (f.profile) rec.profile = f.profile;
  if (f.decidedBy) rec.decidedBy = f.decidedBy;
  if (f.allowHint) rec.allowHint = f.allowHint;
  if (f.mitre) rec.mitre = f.mitre;
  if (f.details && Object.keys(f.details).length) rec.details = f.details;
  switch (ev.kind) {
    case 'process_exec':
      rec.process = {
        pid: ev.pid,
        ppid: ev.ppid,
        exe: ev.exe,
        args: ev.args,
        uid: ev.uid,
        ancestors: ev.ancestors,
        ...(ev.user !== undefined && { user: ev.user }),
        ...(ev.argv0 !== undefined && { argv0: ev.argv0 }),
        ...(ev.comm !== undefined && { comm: ev.comm }),
        ...(ev.tty !== undefined && { tty: ev.tty }),
        ...(ev.cwd !== undefined && { cwd: ev.cwd }),
        ...(!ev.resolved && { resolved: false as const }),
      };
      break;
    case 'file_change':
      rec.file = {
        path: ev.path,
        op: ev.op,
        ...(ev.mode !== undefined && { mode: (ev.mode & 0o7777).toString(8).padStart(4, '0') }),
        ...(ev.linkTarget !== undefined && { linkTarget: ev.linkTarget }),
      };
      if (ev.process) rec.process = { pid: ev.process.pid, ppid: 0, exe: ev.process.exe, args: ev.process.args ?? [], uid: -1, ancestors: [] };
      break;
    case 'net_socket':
      rec.network = { protocol: ev.protocol, direction: ev.direction, local: ev.local, ...(ev.remote !== undefined && { remote: ev.remote }) };
      if (ev.process) rec.process = { pid: ev.process.pid, ppid: 0, exe: ev.process.exe, args: ev.process.args ?? [], uid: -1, ancestors: [] };
      break;
    case 'docker_action':
      rec.docker = {
        action: ev.action,
        ...(ev.execId !== undefined && { execId: ev.execId }),
        ...(ev.command !== undefined && { command: ev.command }),
        ...(ev.image !== undefined && { image: ev.image }),
        ...(ev.hostUser !== undefined && { hostUser: ev.hostUser }),
      };
      break;
    case 'container':
    case 'process_exit':
    case 'resource_sample':
    case 'agent_notice':
      break;
    default:
      assertNever(ev, 'event kind');
  }
  return rec;
}
