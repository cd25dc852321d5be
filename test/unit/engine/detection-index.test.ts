import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DetectionSet, type CompiledDetection, type DetectionEvent } from '../../../agent/engine/detections.js';
import { compileRuleset } from '../../../agent/engine/rule-compiler.js';
import { parseRuleText } from '../../../agent/engine/rule-loader.js';
import { buildEvent, loadRuleTests } from '../../../agent/engine/rule-tests.js';
import type { FileChangeEvent, Finding, ProcessExecEvent } from '../../../agent/events/types.js';
import { containerInfo } from '../../helpers/container-info.js';

/*
 * The index (which detections an event's names, paths, flags and command-line literals can trigger) and
 * the verdict memo only make decisions faster: these tests hold them to the answer of evaluating every
 * detection, from scratch, for every event.
 */

const DEFAULTS = { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } };
const info = containerInfo({ name: 'app', image: 'acme.example/app:1' });

function compile(text: string, file: string): readonly CompiledDetection[] {
  const { ruleset, errors } = compileRuleset(parseRuleText(text, file).docs, DEFAULTS);
  if (!ruleset) throw new Error(errors.map((e) => e.format()).join('\n'));
  return ruleset.detections.all;
}

const baseline = compile(readFileSync('rules/baseline.yaml', 'utf8'), 'rules/baseline.yaml');

/** Every detection evaluated for the event, no index, no memory of earlier events. */
function reference(all: readonly CompiledDetection[], ev: DetectionEvent): string[] {
  return rules(new DetectionSet(all.map((d) => ({ ...d, gate: undefined }))).findings(ev, info, undefined));
}

function rules(fs: readonly Finding[]): string[] {
  return fs.map((f) => f.rule);
}

const caseEvents: DetectionEvent[] = loadRuleTests('test/rules/baseline.cases.yaml')
  .doc.cases.map((c) => buildEvent(c.event, info))
  .filter((ev): ev is DetectionEvent => ['process_exec', 'file_change', 'net_socket', 'docker_action'].includes(ev.kind));

const proc = (over: Partial<ProcessExecEvent>): ProcessExecEvent => ({
  kind: 'process_exec',
  ts: 0,
  containerId: info.id,
  pid: 10,
  ppid: 1,
  exe: '/bin/busybox',
  args: ['sh'],
  argv0: 'sh',
  comm: 'sh',
  uid: 0,
  ancestors: [{ pid: 1, exe: '/usr/bin/dash', comm: 'sh' }],
  resolved: true,
  ...over,
});

const file = (over: Partial<FileChangeEvent>): FileChangeEvent => ({
  kind: 'file_change',
  ts: 0,
  containerId: info.id,
  path: '/srv/data',
  op: 'modify',
  ...over,
});

/** Look-alikes that differ from a harmful event in one input each, in both orders. */
const lookAlikes: DetectionEvent[][] = [
  [proc({}), proc({ ancestors: [{ pid: 1, exe: '/usr/sbin/nginx', comm: 'nginx' }] })],
  [proc({}), proc({ ancestors: [{ pid: 1, exe: '/usr/bin/dash', comm: 'nginx' }] })],
  [proc({}), proc({ stdioSocket: true })],
  [proc({}), proc({ inUpperLayer: true })],
  [proc({}), proc({ exeDeleted: true })],
  [proc({ args: ['sh', '-c', 'echo x'] }), proc({ args: ['sh', '-c', 'echo x | base64 -d | sh'] })],
  // The same command line, split into other arguments.
  [proc({ args: ['sh', '-c', 'base64 -d'] }), proc({ args: ['sh', '-c base64', '-d'] })],
  [
    proc({ exe: '/usr/bin/curl', argv0: 'curl', comm: 'curl', args: ['curl', 'x'] }),
    proc({ exe: '/usr/bin/curl', argv0: 'curl', comm: 'curl', args: ['curl', 'http://169.254.169.254/'] }),
  ],
  [proc({ exe: '/usr/bin/x', argv0: 'x', comm: 'x', args: ['x'] }), proc({ exe: '/usr/bin/x', argv0: 'xmrig', comm: 'x', args: ['xmrig'] })],
  [proc({ exe: '/usr/bin/x', argv0: 'x', comm: 'x', args: ['x'] }), proc({ exe: '/usr/bin/x', argv0: 'x', comm: 'kinsing', args: ['x'] })],
  [
    proc({ exe: '/usr/bin/x', argv0: 'x', comm: 'x', args: ['x'] }),
    proc({ exe: '/usr/bin/x', argv0: 'x', comm: 'x', args: ['x', '--url', 'stratum+tcp://pool:3333'] }),
  ],
  [proc({ exe: '/tmp/x', argv0: 'x', comm: 'x', args: ['x'] }), proc({ exe: '/tmpx', argv0: 'x', comm: 'x', args: ['x'] })],
  [file({ path: '/srv/link', linkTarget: '/etc', op: 'delete' }), file({ path: '/srv/link', linkTarget: '/etc', op: 'create' })],
  [file({ path: '/srv/tool', mode: 0o100755, previousMode: 0o100755 }), file({ path: '/srv/tool', mode: 0o104755, previousMode: 0o100755 })],
  [file({ path: '/srv/tool', mode: 0o104755, previousMode: 0o104755 }), file({ path: '/srv/tool', mode: 0o104755, previousMode: 0o100755 })],
  [file({ path: '/srv/link' }), file({ path: '/srv/link', linkTarget: '/etc/shadow' })],
  [file({ path: '/srv/link', linkTarget: '/etc/shadowx' }), file({ path: '/srv/link', linkTarget: '/etc/shadow' })],
  [file({ path: '/home/a/.bashrc', op: 'delete' }), file({ path: '/home/a/.bashrc', op: 'create' })],
];

describe('detection index and verdict memo', () => {
  it('the shipped cases hold something to check: harmful and harmless events of every kind', () => {
    const fired = caseEvents.filter((ev) => reference(baseline, ev).length > 0);
    expect(fired.length).toBeGreaterThan(30);
    expect(caseEvents.length - fired.length).toBeGreaterThan(10);
  });

  it('gives every shipped case the findings of evaluating every detection from scratch', () => {
    const set = new DetectionSet(baseline);
    // Twice: the second pass is answered from the memo.
    for (let pass = 0; pass < 2; pass++)
      for (const ev of caseEvents) expect(rules(set.findings(ev, info, undefined)), JSON.stringify(ev)).toEqual(reference(baseline, ev));
  });

  it('never answers an event from the memo of one that differs in a single input', () => {
    for (const pair of lookAlikes) {
      const want = pair.map((ev) => reference(baseline, ev));
      expect(want[0], JSON.stringify(pair)).not.toEqual(want[1]);
      for (const order of [pair, [...pair].reverse()]) {
        const set = new DetectionSet(baseline);
        for (let round = 0; round < 2; round++)
          for (const ev of order) expect(rules(set.findings(ev, info, undefined)), JSON.stringify(ev)).toEqual(reference(baseline, ev));
      }
    }
  });

  it('keeps every ancestor in the memo when a detection looks past the parent', () => {
    const all = compile(
      `apiVersion: runwatch/v1
kind: Detection
id: custom.shell_under_cron
title: Shell Under Cron
description: Detect a shell with cron among its ancestors.
severity: medium
mitre: T1053.003
on: process_exec
when:
  all:
    - proc.name: sh
    - ancestor.name: cron
`,
      '/rules/custom.yaml',
    );
    const parent = { pid: 5, exe: '/usr/bin/dash', comm: 'sh' };
    const quiet = proc({ ancestors: [parent, { pid: 1, exe: '/usr/sbin/sshd', comm: 'sshd' }] });
    const loud = proc({ ancestors: [parent, { pid: 1, exe: '/usr/sbin/cron', comm: 'cron' }] });
    const set = new DetectionSet(all);
    expect(rules(set.findings(quiet, info, undefined))).toEqual([]);
    expect(rules(set.findings(loud, info, undefined))).toEqual(['custom.shell_under_cron']);
  });

  it('triggers on a command-line literal that spans two arguments, and on one written in any case', () => {
    const set = new DetectionSet(baseline);
    const history = proc({ exe: '/bin/bash', argv0: 'bash', comm: 'bash', args: ['bash', '-c', 'history', '-c'], ancestors: [] });
    expect(reference(baseline, history)).toContain('baseline.clear_logs');
    expect(rules(set.findings(history, info, undefined))).toContain('baseline.clear_logs');
    const grep = proc({ exe: '/bin/grep', argv0: 'grep', comm: 'grep', args: ['grep', '-r', 'PassWord', '/srv'], ancestors: [] });
    expect(rules(set.findings(grep, info, undefined))).toEqual(['baseline.credential_search']);
  });
});
