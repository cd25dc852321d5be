import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { splitWords } from '../../../agent/cli/rules-command.js';
import { explain, renderExplanation, type ExplainQuery } from '../../../agent/engine/explain.js';
import { NetSpecError } from '../../../agent/engine/net-spec.js';
import { compileRuleset, loadRulesWithSources } from '../../../agent/engine/rule-compiler.js';
import { parseRuleText } from '../../../agent/engine/rule-loader.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const opts = { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } };
const shipped = loadRulesWithSources([path.join(root, 'rules')], opts);
const BASELINE = path.join(root, 'rules/baseline.yaml');

function rulesOf(text: string) {
  const { ruleset, sources, errors } = compileRuleset(parseRuleText(text, '/rules/x.yaml').docs, opts);
  if (!ruleset || !sources) throw new Error(errors.map((e) => e.format()).join('\n'));
  return { ruleset, sources };
}

const ids = (list: { id: string }[]) => list.map((d) => d.id);

describe('rules explain: detections for the shipped rules', () => {
  it('an unprofiled image: no allowlist, but the detections that fire, with severity, MITRE id, description and file:line', () => {
    const e = explain(shipped, { image: 'acme/app:1', write: '/etc/passwd' });
    expect(e.profile).toBeUndefined();
    expect(e.detections).toMatchObject({ loaded: 25, files: [BASELINE], off: [], rerated: [] });
    const [write] = e.activities;
    expect(write.allowlist).toEqual({ verdict: 'not_checked' });
    expect(write.detections).toEqual([
      {
        id: 'baseline.user_management',
        title: 'User Database Changed',
        description: expect.stringMatching(/^Detect a change to \/etc\/passwd/),
        severity: 'high',
        mitre: 'T1136.001',
        file: BASELINE,
        line: 194,
        message: 'User Database Changed: file /etc/passwd was modified in container explain (acme/app:1)',
      },
    ]);
    expect(e.wouldAlert).toBe(true);
    const text = renderExplanation(e);
    expect(text).toContain('write /etc/passwd: not checked (no profile applies)');
    expect(text).toContain('write /etc/passwd: DETECTED → baseline.user_management (high, MITRE T1136.001) at rules/baseline.yaml:194');
  });

  it('a program from /tmp fires exec_from_temp; with --drift the drift detection too', () => {
    expect(ids(explain(shipped, { image: 'acme/app:1', exe: '/tmp/x' }).activities[0].detections)).toEqual(['baseline.exec_from_temp']);
    expect(ids(explain(shipped, { image: 'acme/app:1', exe: '/tmp/x', drift: true }).activities[0].detections)).toEqual([
      'baseline.drift_exec',
      'baseline.exec_from_temp',
    ]);
  });

  it('a profiled image: the allowlist verdict and the detections are separate answers', () => {
    const allowedButDetected = explain(shipped, { image: 'nginx:1.27', exe: '/usr/sbin/nginx', args: ['-g', 'daemon off;'], parents: ['/bin/bash'] });
    expect(allowedButDetected.activities[0].allowlist).toMatchObject({ verdict: 'allowed', by: { entry: '/usr/sbin/nginx', profile: 'nginx' } });
    expect(allowedButDetected.activities[0].detections).toEqual([]);
    expect(allowedButDetected.wouldAlert).toBe(false);
    expect(renderExplanation(allowedButDetected)).toContain('exe /usr/sbin/nginx: no detection matches');

    // nginx's Alpine profile allows busybox sh; a shell under the nginx server process is still a detection.
    const e = explain(shipped, { image: 'nginx:1.27-alpine', exe: '/bin/busybox', name: 'sh', args: ['-c', 'id'], parents: ['nginx'] });
    const [sh] = e.activities;
    expect(sh.allowlist).toMatchObject({ verdict: 'allowed', profile: 'nginx' });
    expect(sh.detections).toMatchObject([{ id: 'baseline.shell_from_server', severity: 'high', mitre: 'T1059.004' }]);
    expect(sh.detections[0].message).toContain('process /bin/busybox as "sh" ran: "sh -c id", parent nginx');
    expect(e.wouldAlert).toBe(true);
    const text = renderExplanation(e);
    expect(text).toContain('exe /bin/busybox as "sh": DETECTED → baseline.shell_from_server (high, MITRE T1059.004) at rules/baseline.yaml:10');
    expect(text).toContain('         to turn it off for this image, add under detections.disable of profile nginx:');
    expect(text).toContain('           - baseline.shell_from_server');
  });

  it('builds the process as described: args split, parents nearest first, uid, tty, stdio socket', () => {
    const q: ExplainQuery = { image: 'acme/app:1', exe: '/bin/bash', args: ['-i'], parents: ['/usr/bin/nc', 'sshd'], uid: 1000, tty: true, stdioSocket: true };
    const [a] = explain(shipped, q).activities;
    expect(a.event).toMatchObject({
      kind: 'process_exec',
      exe: '/bin/bash',
      args: ['bash', '-i'],
      argv0: 'bash',
      uid: 1000,
      tty: '/dev/pts/0',
      stdioSocket: true,
      ancestors: [
        { exe: '/usr/bin/nc', comm: 'nc' },
        { exe: 'sshd', comm: 'sshd' },
      ],
    });
    expect(ids(a.detections)).toEqual(['baseline.reverse_shell']);
  });

  it('describes file changes: a chmod that sets setuid, a symlink to /etc/shadow', () => {
    const chmod = explain(shipped, { image: 'acme/app:1', write: '/opt/x', chmod: 0o4755 });
    expect(chmod.activities[0]).toMatchObject({ label: 'chmod 4755 /opt/x', event: { op: 'chmod', mode: 0o104755, previousMode: 0o100755 } });
    expect(ids(chmod.activities[0].detections)).toEqual(['baseline.setid_bit']);
    expect(ids(explain(shipped, { image: 'acme/app:1', write: '/opt/x', chmod: 0o755 }).activities[0].detections)).toEqual([]);
    const link = explain(shipped, { image: 'acme/app:1', write: '/tmp/s', linkTo: '../etc/shadow' });
    expect(link.activities[0].label).toBe('symlink /tmp/s → ../etc/shadow');
    expect(ids(link.activities[0].detections)).toEqual(['baseline.sensitive_link']);
  });

  it('network: a connection to the metadata address', () => {
    const e = explain(shipped, { image: 'nginx:1.27', connect: 'tcp:169.254.169.254:80' });
    expect(e.activities[0].allowlist).toMatchObject({ verdict: 'not_allowed', findings: [{ rule: 'network.connect_not_allowed' }] });
    expect(ids(e.activities[0].detections)).toEqual(['baseline.metadata_connect']);
    expect(() => explain(shipped, { image: 'x', listen: 'tcp:1-2' })).toThrow(NetSpecError);
  });
});

describe('rules explain: detections off or re-rated for an image, and why', () => {
  const head = (id: string) =>
    `apiVersion: runwatch/v1\nkind: Detection\nid: ${id}\ntitle: T\ndescription: Detect ${id}.\nseverity: medium\nmitre: T1059\non: process_exec\n`;
  const RULES = [
    `${head('t.policy_off')}when:\n  proc.name: sh`,
    `${head('t.rerated')}when:\n  proc.name: sh`,
    `${head('t.disabled')}when:\n  proc.name: sh`,
    `${head('t.except_profile')}when:\n  proc.name: sh\nexcept:\n  profiles: [other, app]`,
    `${head('t.except_image')}when:\n  proc.name: sh\nexcept:\n  images: ["acme/nope", "acme/app:1.*"]`,
    `${head('t.on')}when:\n  proc.name: sh`,
    `apiVersion: runwatch/v1\nkind: ImagePolicy\nseverities:\n  t.policy_off: "off"\n  t.rerated: critical`,
    `apiVersion: runwatch/v1\nkind: ImageProfile\nname: base\ndetections:\n  disable: [t.disabled]`,
    `apiVersion: runwatch/v1\nkind: ImageProfile\nname: app\nimages: ["acme/app"]\nextends: [base]\nprocess:\n  allow: [/bin/sh]`,
  ].join('\n---\n');
  const rules = rulesOf(RULES);
  const F = '/rules/x.yaml';

  it('lists each with every reason and its file:line; re-rated ones with both severities', () => {
    const e = explain(rules, { image: 'acme/app:1.2', exe: '/bin/sh' });
    expect(e.detections.off).toEqual([
      { id: 't.policy_off', reasons: [{ by: 'ImagePolicy.severities', file: F, line: 74 }] },
      { id: 't.disabled', reasons: [{ by: 'detections.disable', profile: 'base', file: F, line: 81 }] },
      { id: 't.except_profile', reasons: [{ by: 'except.profiles', profile: 'app', file: F, line: 45 }] },
      { id: 't.except_image', reasons: [{ by: 'except.images', pattern: 'acme/app:1.*', file: F, line: 58 }] },
    ]);
    expect(e.detections.rerated).toEqual([{ id: 't.rerated', severity: 'critical', defaultSeverity: 'medium', file: F, line: 75 }]);
    const [sh] = e.activities;
    expect(sh.allowlist).toMatchObject({ verdict: 'allowed', by: { entry: '/bin/sh' } });
    expect(sh.detections.map((d) => `${d.id} ${d.severity} ${d.defaultSeverity ?? '-'}`)).toEqual(['t.rerated critical medium', 't.on medium -']);
    expect(ids(sh.suppressed)).toEqual(['t.policy_off', 't.disabled', 't.except_profile', 't.except_image']);

    const text = renderExplanation(e);
    expect(text).toContain('detections 6 loaded (/rules/x.yaml): 2 on for this image, 4 off, 1 re-rated');
    for (const line of [
      '         t.policy_off: off by ImagePolicy.severities (/rules/x.yaml:74)',
      '         t.disabled: off by detections.disable of profile base (/rules/x.yaml:81)',
      '         t.except_profile: off by its except.profiles: app (/rules/x.yaml:45)',
      '         t.except_image: off by its except.images: "acme/app:1.*" (/rules/x.yaml:58)',
      '         t.rerated: critical (default medium) by ImagePolicy.severities (/rules/x.yaml:75)',
      'exe /bin/sh: DETECTED → t.rerated (critical, re-rated from medium; MITRE T1059) at /rules/x.yaml:14',
      'exe /bin/sh: t.disabled matches, but is off for this image by detections.disable of profile base (/rules/x.yaml:81)',
    ])
      expect(text).toContain(line);
  });

  it('another image of the same profile, and an unprofiled image, keep only what applies to them', () => {
    expect(ids(explain(rules, { image: 'acme/app:2', exe: '/bin/sh' }).detections.off)).toEqual(['t.policy_off', 't.disabled', 't.except_profile']);
    const unprofiled = explain(rules, { image: 'acme/else:1', exe: '/bin/sh' });
    expect(ids(unprofiled.detections.off)).toEqual(['t.policy_off']);
    expect(ids(unprofiled.activities[0].detections)).toEqual(['t.rerated', 't.disabled', 't.except_profile', 't.except_image', 't.on']);
  });

  it('a detection alone makes an alert; allowed with no detection firing makes none', () => {
    const e = explain(rules, { image: 'acme/app:1.2', exe: '/bin/sh' });
    expect(e.activities[0].allowlist.verdict).toBe('allowed');
    expect(e.wouldAlert).toBe(true);
    const quiet = explain(rulesOf(RULES.replace(/proc\.name: sh/g, 'proc.name: zsh')), { image: 'acme/app:1.2', exe: '/bin/sh' });
    expect(quiet.activities[0].detections).toEqual([]);
    expect(quiet.wouldAlert).toBe(false);
    expect(renderExplanation(quiet)).toContain('exe /bin/sh: no detection matches');
  });
});

describe('rules explain --args: words as a shell splits them', () => {
  it('splits on blanks and keeps quoted text together', () => {
    expect(splitWords(`-c 'id; uname -a'`)).toEqual(['-c', 'id; uname -a']);
    expect(splitWords(`  -o "out file" a\\ b "q\\"x" ''`)).toEqual(['-o', 'out file', 'a b', 'q"x', '']);
    expect(splitWords('stratum+tcp://pool:3333')).toEqual(['stratum+tcp://pool:3333']);
    expect(splitWords(`-c 'unclosed`)).toBeNull();
  });
});
