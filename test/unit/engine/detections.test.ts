import { describe, expect, it } from 'vitest';
import { compileRuleset } from '../../../agent/engine/rule-compiler.js';
import { parseRuleText } from '../../../agent/engine/rule-loader.js';
import type { ContainerInfo, DockerActionEvent, FileChangeEvent, ProcessExecEvent } from '../../../agent/events/types.js';

const head = (id: string, on: string) => `apiVersion: runwatch/v1
kind: Detection
id: ${id}
title: Test ${id}
description: Detect ${id}.
severity: high
mitre: T1059
on: ${on}
`;

function detections(text: string) {
  const { ruleset, errors } = compileRuleset(parseRuleText(text, '/rules/d.yaml').docs, { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } });
  if (!ruleset) throw new Error(errors.map((e) => e.format()).join('\n'));
  return ruleset.detections;
}

const info: ContainerInfo = {
  id: 'a'.repeat(64),
  name: 'app-1',
  image: 'acme/app:1',
  imageId: `sha256:${'1'.repeat(64)}`,
  imageRepoDigests: [],
  created: '2025-01-01T00:00:00Z',
  running: true,
  pid: 10,
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

const exec = (exe: string, args: string[], over: Partial<ProcessExecEvent> = {}): ProcessExecEvent => ({
  kind: 'process_exec',
  ts: 0,
  containerId: info.id,
  pid: 2,
  ppid: 1,
  exe,
  args,
  argv0: args[0],
  uid: 0,
  ancestors: [],
  resolved: true,
  ...over,
});
const write = (path: string, over: Partial<FileChangeEvent> = {}): FileChangeEvent => ({
  kind: 'file_change',
  ts: 0,
  containerId: info.id,
  path,
  op: 'modify',
  ...over,
});
const fired = (findings: { rule: string }[]) => findings.map((f) => f.rule);

// Detections are indexed by proc.name and by a path's first level or base name; these check that the
// index and the literal pre-checks skip only what cannot match.
describe('detection index and pre-checks', () => {
  const set = detections(
    [
      `${head('t.pip', 'process_exec')}when:\n  all:\n    - proc.name: [apt, "pip[0-9]*"]\n    - proc.args: [install]\n`,
      `${head('t.secret', 'process_exec')}when:\n  proc.args: ["*[pP][aA][sS][sS]*", "*BEGIN*PRIVATE KEY*", "*.pem"]\n`,
      `${head('t.either', 'process_exec')}when:\n  any:\n    - proc.name: miner\n    - proc.cmdline: "*stratum+tcp://*"\n`,
      `${head('t.rc', 'file_change')}when:\n  file.path: ["/etc/profile", "/**/.bashrc"]\n`,
      `${head('t.any_path', 'file_change')}when:\n  file.path: ["/*/x/**"]\n`,
      `${head('t.exec', 'docker_action')}when:\n  docker.args: ["-*i*"]\n`,
    ].join('---\n'),
  );

  it('runs name-indexed detections for literal and glob names, argv0 and busybox applets included', () => {
    expect(fired(set.findings(exec('/usr/bin/pip3.12', ['pip3.12', 'install', 'x']), info, undefined))).toEqual(['t.pip']);
    expect(fired(set.findings(exec('/bin/busybox', ['apt', 'install']), info, undefined))).toEqual(['t.pip']);
    expect(fired(set.findings(exec('/usr/bin/pipx', ['pipx', 'install']), info, undefined))).toEqual([]);
    expect(fired(set.findings(exec('/usr/bin/app', ['app', 'install']), info, undefined))).toEqual([]);
  });

  it('finds arguments through the joined command line, case pairs ignoring case, and keeps load order', () => {
    expect(fired(set.findings(exec('/bin/grep', ['grep', '-r', 'PassWord', '/']), info, undefined))).toEqual(['t.secret']);
    expect(fired(set.findings(exec('/bin/grep', ['grep', '-----BEGIN RSA PRIVATE KEY']), info, undefined))).toEqual(['t.secret']);
    expect(fired(set.findings(exec('/bin/ls', ['ls', 'a.pem.bak']), info, undefined))).toEqual([]);
    // "key.pem" is in the command line but only as argv[0], which proc.args leaves out.
    expect(fired(set.findings(exec('/tmp/key.pem', ['key.pem', 'run']), info, undefined))).toEqual([]);
    expect(fired(set.findings(exec('/usr/bin/miner', ['miner', '-o', 'stratum+tcp://pool:3333', '--pass', 'x']), info, undefined))).toEqual([
      't.secret',
      't.either',
    ]);
    expect(fired(set.findings(exec('/usr/bin/x', ['x', 'stratum+tcp://pool:3333']), info, undefined))).toEqual(['t.either']);
  });

  it('indexes paths by first level or base name and runs key-less globs for every path', () => {
    expect(fired(set.findings(write('/home/app/.bashrc'), info, undefined))).toEqual(['t.rc']);
    expect(fired(set.findings(write('/etc/profile'), info, undefined))).toEqual(['t.rc']);
    expect(fired(set.findings(write('/etc/profile.d/a.sh'), info, undefined))).toEqual([]);
    expect(fired(set.findings(write('/opt/x/y'), info, undefined))).toEqual(['t.any_path']);
  });

  it('searches docker exec words through the command', () => {
    const ev: DockerActionEvent = { kind: 'docker_action', ts: 0, containerId: info.id, action: 'exec_start', command: 'sh -it' } as DockerActionEvent;
    expect(fired(set.findings(ev, info, undefined))).toEqual(['t.exec']);
    expect(fired(set.findings({ ...ev, command: '-it sh' }, info, undefined))).toEqual([]);
  });

  it('never throws on events with fields missing or of odd shapes', () => {
    const odd = [
      { kind: 'process_exec', ts: 0, containerId: info.id },
      { kind: 'process_exec', ts: 0, containerId: info.id, exe: '', args: [], ancestors: [{}] },
      { kind: 'file_change', ts: 0, containerId: info.id },
      { kind: 'file_change', ts: 0, containerId: info.id, path: 'relative/.bashrc', linkTarget: '../../..' },
      { kind: 'docker_action', ts: 0, containerId: info.id },
      { kind: 'net_socket', ts: 0, containerId: info.id },
    ] as unknown as ProcessExecEvent[];
    for (const ev of odd) expect(() => set.findings(ev, info, undefined)).not.toThrow();
    expect(fired(set.findings(odd[3] as unknown as FileChangeEvent, info, undefined))).toEqual([]);
  });
});
