import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { duration } from '../../../agent/engine/learner-render.js';
import { formatShadowReport, loadShadowRules, ShadowEvaluator } from '../../../agent/engine/learner-shadow.js';
import { RunwatchErrors } from '../../../agent/errors.js';
import { container, exec, listen, write } from './learner-fixtures.js';

const dir = mkdtempSync(path.join(tmpdir(), 'runwatch-shadow-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const opts = { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } };

const active = path.join(dir, 'active');
mkdirSync(active);
writeFileSync(
  path.join(active, 'rules.yaml'),
  [
    'apiVersion: runwatch/v1',
    'kind: ImagePolicy',
    'severities: { file.write_not_allowed: "off" }',
    '---',
    'apiVersion: runwatch/v1',
    'kind: ImageProfile',
    'name: base',
    'process: { allow: [/usr/bin/id] }',
    '---',
    'apiVersion: runwatch/v1',
    'kind: ImageProfile',
    'name: tools',
    'images: ["runwatch-test/tools:*"]',
    'process: { allow: ["/**"] }',
    '---',
    'apiVersion: runwatch/v1',
    'kind: ImageProfile',
    'name: busybox',
    'images: ["runwatch-test/busybox:*"]',
    'process: { allow: ["/**"] }',
    '',
  ].join('\n'),
);
const candidate = path.join(dir, 'tools.candidate.yaml');
writeFileSync(
  candidate,
  [
    'apiVersion: runwatch/v1',
    'kind: ImageProfile',
    'name: tools',
    'images: ["runwatch-test/tools:1"]',
    'extends: [base]',
    'process:',
    '  allow: [/usr/bin/sleep, { exe: /bin/busybox, names: [sh] }]',
    'network: { listen: [tcp:8080] }',
    '',
  ].join('\n'),
);

describe('shadow evaluation', () => {
  it('judges only the containers the candidate applies to, by the candidate (with its bases and the active policy), and counts per rule and subject', () => {
    let t = 0;
    const shadow = new ShadowEvaluator(loadShadowRules(candidate, [active], opts), () => (t += 60_000));
    const tools = container('1');
    const tools2 = container('2');
    const busybox = container('3', 'runwatch-test/busybox:1');
    const events = [
      [exec(tools, '/usr/bin/sleep', ['sleep', '1']), tools],
      [exec(tools, '/usr/bin/id', ['id']), tools],
      [exec(tools, '/usr/bin/stat', ['stat', '/']), tools],
      [exec(tools2, '/usr/bin/stat', ['stat', '/']), tools2],
      [exec(tools, '/bin/busybox', ['nc', '-l'], { argv0: 'nc' }), tools],
      [exec(tools, '/bin/busybox', ['sh'], { argv0: 'sh' }), tools],
      [listen(tools, '[::]:8080'), tools],
      [listen(tools, '[::]:4444'), tools],
      [write(tools, '/etc/passwd'), tools],
      [exec(busybox, '/bin/evil', ['evil']), busybox],
      [exec(tools, '/usr/bin/stat', ['stat']), undefined],
    ] as const;
    for (const [ev, c] of events) shadow.observe(ev, c);
    const report = shadow.report();
    expect(report).toMatchObject({ containers: 2, events: 9, alerts: 4 });
    expect(report.rows.map((r) => [r.count, r.rule, r.profile, r.subject, r.containers, r.allowHint])).toEqual([
      [2, 'process.not_allowed', 'tools', '/usr/bin/stat\0stat', 2, '- /usr/bin/stat'],
      [1, 'network.listen_not_allowed', 'tools', 'tcp:4444', 1, '- tcp:4444'],
      [1, 'process.not_allowed', 'tools', '/bin/busybox\0nc', 1, '- { exe: /bin/busybox, names: [nc] }'],
    ]);
    expect(formatShadowReport(report, duration)).toBe(
      [
        `shadow run of ${candidate} for 1m 0s: 2 containers matched, 9 events evaluated; the candidate would have raised 4 alerts (3 distinct):`,
        '',
        'count  rule                        profile  subject             containers  allow with',
        '    2  process.not_allowed         tools    /usr/bin/stat                2  - /usr/bin/stat',
        '    1  network.listen_not_allowed  tools    tcp:4444                     1  - tcp:4444',
        '    1  process.not_allowed         tools    /bin/busybox as nc           1  - { exe: /bin/busybox, names: [nc] }',
        '',
      ].join('\n'),
    );
  });

  it('reports a quiet candidate as such', () => {
    const shadow = new ShadowEvaluator(loadShadowRules(candidate, [active], opts), () => 0);
    const tools = container('1');
    shadow.observe(exec(tools, '/usr/bin/sleep', ['sleep', '1']), tools);
    expect(formatShadowReport(shadow.report(), duration)).toBe(
      `shadow run of ${candidate} for 0s: 1 container matched, 1 event evaluated; the candidate would have raised no alerts\n`,
    );
  });

  it('refuses a broken candidate with located errors, and one without profiles', () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'apiVersion: runwatch/v1\nkind: ImageProfile\nname: tools\nextends: [nope]\nnetwork:\n  connect: ["tcp:10.0.0.1/8:5432"]\n');
    const err = (() => {
      try {
        loadShadowRules(bad, [active], opts);
      } catch (e) {
        return e as RunwatchErrors;
      }
    })();
    expect(err).toBeInstanceOf(RunwatchErrors);
    expect(err!.errors.map((e) => [e.code, e.file, e.line, e.field])).toEqual([
      ['RW_RULE_BAD_CIDR', bad, 6, 'network.connect[0]'],
      ['RW_RULE_EXTENDS', bad, 4, 'extends[0]'],
    ]);
    const policyOnly = path.join(dir, 'policy.yaml');
    writeFileSync(policyOnly, 'apiVersion: runwatch/v1\nkind: ImagePolicy\n');
    expect(() => loadShadowRules(policyOnly, [active], opts)).toThrow(/holds no ImageProfile/);
  });
});
