import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decide } from '../../../agent/engine/decide.js';
import { DEFAULT_GENERALISE_RULE, ProfileLearner } from '../../../agent/engine/learner.js';
import { coverageOf, formatAdded, readMergeTarget, renderMerged, renderProfile, type RenderedProfile } from '../../../agent/engine/learner-render.js';
import { compileRuleset } from '../../../agent/engine/rule-compiler.js';
import { parseRuleText } from '../../../agent/engine/rule-loader.js';
import type { Ruleset } from '../../../agent/engine/ruleset.js';
import { RunwatchError, RunwatchErrors } from '../../../agent/errors.js';
import type { ContainerInfo, RunwatchEvent } from '../../../agent/events/types.js';
import { connect, container, exec, toolsBehaviour, write } from './learner-fixtures.js';

const IMAGE = 'runwatch-test/tools:1';
const dir = mkdtempSync(path.join(tmpdir(), 'runwatch-learner-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A learner fed `events`, its clock starting at `start` and ticking a second per reading. */
function learn(events: RunwatchEvent[], c: ContainerInfo, start = 1_700_000_000_000): { learner: ProfileLearner; end: number } {
  let t = start;
  const learner = new ProfileLearner({ images: [IMAGE], now: () => (t += 1000) });
  for (const ev of events) learner.observe(ev, c);
  return { learner, end: t + 600_000 };
}

function fresh(events: RunwatchEvent[], c: ContainerInfo, start?: number): RenderedProfile {
  const { learner, end } = learn(events, c, start);
  return renderProfile({
    name: 'tools',
    images: [IMAGE],
    lists: learner.lists(),
    coverage: coverageOf(learner.observed, { endedAt: end, sensorsOff: [], rule: DEFAULT_GENERALISE_RULE }),
  });
}

/** The coverage comment's times are the only lines allowed to differ between two learning runs. */
const withoutTimes = (text: string) => text.replace(/^# (Observed|Stopped growing|Still growing):.*\n/gm, '');

function compile(text: string, file = path.join(dir, 'learned.yaml')): Ruleset {
  const parsed = parseRuleText(text, file);
  expect(parsed.errors.map((e) => e.format())).toEqual([]);
  const { ruleset, errors } = compileRuleset(parsed.docs, { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } }, [file]);
  expect(errors.map((e) => e.format())).toEqual([]);
  return ruleset!;
}

const activity = (rs: Ruleset, evs: RunwatchEvent[], c: ContainerInfo) =>
  evs.flatMap((ev) => decide(rs, ev, { container: c })).filter((f) => /^(process|file|network)\./.test(f.rule));

describe('renderProfile', () => {
  const c = container('1');

  it('writes a sorted ImageProfile with a count after every entry under a coverage comment', () => {
    const r = fresh(toolsBehaviour(c), c);
    const [head, body] = r.text.split('\n\napiVersion');
    expect(head.split('\n')).toEqual([
      `# runwatch learn: learned from what containers of ${IMAGE} did.`,
      '# Review every entry: the profile allows what those containers did while watched, and nothing else.',
      '# Coverage: 1 container, 21 events, 12 entries (4 process, 6 files, 1 listen, 1 connect).',
      expect.stringMatching(/^# Observed: 2023-11-14T22:13:\d\dZ to 2023-11-14T22:2\d:\d\dZ \(10m \d+s\)\.$/),
      expect.stringMatching(/^# Stopped growing: 10m 0s before learning ended \(last new entry .*Z\)\.$/),
      '# Paths: 5 or more names written in one directory 2 or more levels deep became "dir/**".',
      "# Each entry's comment counts the events that needed it.",
    ]);
    expect('apiVersion' + body).toBe(
      [
        'apiVersion: runwatch/v1',
        'kind: ImageProfile',
        'name: tools',
        `images: [ ${IMAGE} ]`,
        'process:',
        '  allow:',
        '    - { exe: /bin/busybox, names: [ mkdir, sh, touch ] } # 3 (mkdir 1, sh 1, touch 1)',
        '    - /usr/bin/id # 2',
        '    - /usr/bin/sleep # 1',
        '    - /usr/bin/whoami # 1',
        'files:',
        '  write:',
        '    - /data # 1',
        '    - /data/out.txt # 2',
        '    - /var # 1',
        '    - /var/cache # 1',
        '    - /var/cache/app # 1',
        '    - /var/cache/app/** # 6 (6 paths)',
        'network:',
        '  listen:',
        '    - tcp:8080 # 1',
        '  connect:',
        '    - tcp:127.0.0.1:5432 # 1',
        '',
      ].join('\n'),
    );
  });

  it('is byte-identical for the same behaviour apart from the times, whatever the clock, container or event order', () => {
    const other = container('2');
    const a = fresh(toolsBehaviour(c), c, 1_700_000_000_000);
    const b = fresh(toolsBehaviour(other), other, 1_800_000_000_000);
    const reversed = fresh(toolsBehaviour(c).reverse(), c);
    expect(a.text).not.toBe(b.text);
    expect(withoutTimes(b.text)).toBe(withoutTimes(a.text));
    expect(withoutTimes(reversed.text)).toBe(withoutTimes(a.text));
  });

  it('validates, allows everything it learned and nothing else', () => {
    const r = fresh(toolsBehaviour(c), c);
    const rs = compile(r.text);
    expect(rs.profileFor(c)?.profile.name).toBe('tools');
    const replay = container('3');
    expect(activity(rs, toolsBehaviour(replay), replay)).toEqual([]);
    expect(activity(rs, [write(replay, '/var/cache/app/item99')], replay)).toEqual([]);
    const news = [
      exec(replay, '/usr/bin/stat', ['stat', '/']),
      exec(replay, '/bin/busybox', ['wget', 'x'], { argv0: 'wget' }),
      write(replay, '/etc/passwd', 'modify'),
      connect(replay, '127.0.0.1:6379'),
    ];
    expect(activity(rs, news, replay).map((f) => [f.rule, f.allowHint])).toEqual([
      ['process.not_allowed', '- /usr/bin/stat'],
      ['process.not_allowed', '- { exe: /bin/busybox, names: [wget] }'],
      ['file.write_not_allowed', '- /etc/passwd'],
      ['network.connect_not_allowed', '- tcp:127.0.0.1:6379'],
    ]);
  });

  it('says which lists could not be learned and what was left out', () => {
    const { learner, end } = learn([exec(c, '', []), exec(c, '/bin/busybox', ['['], { argv0: '[' })], c);
    const r = renderProfile({
      name: 'tools',
      images: [IMAGE],
      lists: learner.lists(),
      coverage: coverageOf(learner.observed, { endedAt: end, sensorsOff: ['process'], rule: DEFAULT_GENERALISE_RULE }),
    });
    expect(r.text).toContain('# Not learned: the process sensor was not running, so process.allow could not be learned.\n');
    expect(r.text).toContain('# 1 process start ended before the executable could be read (not listed).\n');
    expect(r.text).toContain('# Not listable (review by hand): /bin/busybox as "[".\n');
    expect(r.text).toContain('  allow: []\n');
    compile(r.text);
  });
});

describe('merge', () => {
  const c = container('1');
  const existing = [
    '# Our image policy',
    'apiVersion: runwatch/v1',
    'kind: ImagePolicy',
    'unprofiled: ignore',
    '---',
    '# Hand-written profile for tools',
    'apiVersion: runwatch/v1',
    'kind: ImageProfile',
    'name: tools',
    'description: the tools image',
    `images: ["${IMAGE}"]`,
    'extends: [base]',
    'process:',
    '  allow:',
    '    - /usr/bin/id   # ids are fine',
    '    - { exe: /bin/busybox, names: [sh] }',
    'files:',
    '  write: ["/var/**"]',
    'posture: { allowRoot: true }',
    '',
  ].join('\n');

  function mergeInto(text: string, events: RunwatchEvent[]): RenderedProfile {
    const file = path.join(dir, `merge-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, text);
    const target = readMergeTarget(file, { images: [IMAGE] });
    const { learner, end } = learn(events, c);
    return renderMerged(target, {
      images: [IMAGE],
      lists: learner.lists(DEFAULT_GENERALISE_RULE, target.allows),
      coverage: coverageOf(learner.observed, { endedAt: end, sensorsOff: [], rule: DEFAULT_GENERALISE_RULE }),
    });
  }

  it('adds only what the profile does not allow yet, keeps the rest of the file, and prints the diff', () => {
    const r = mergeInto(existing, toolsBehaviour(c));
    expect(formatAdded(r, 'rules/tools.yaml')).toBe(
      [
        'profile "tools" (rules/tools.yaml): 7 entries to add',
        '+ process.allow: { exe: /bin/busybox, names: [mkdir, touch] }  # 2 (mkdir 1, touch 1)',
        '+ process.allow: /usr/bin/sleep  # 1',
        '+ process.allow: /usr/bin/whoami  # 1',
        '+ files.write: /data  # 1',
        '+ files.write: /data/out.txt  # 2',
        '+ network.listen: tcp:8080  # 1',
        '+ network.connect: tcp:127.0.0.1:5432  # 1',
        '',
      ].join('\n'),
    );
    expect(r.text).toContain('# Our image policy\napiVersion: runwatch/v1\nkind: ImagePolicy\nunprofiled: ignore\n---\n');
    expect(r.text).toContain('# Merged into ');
    expect(r.text).toContain('(entries inherited from base were not consulted)');
    expect(r.text).toMatch(/\n---\n# runwatch learn: .*\n(# .*\n){7}# Hand-written profile for tools\napiVersion: runwatch\/v1\n/);
    expect(r.text).toContain(
      '    - /usr/bin/id # ids are fine\n    - { exe: /bin/busybox, names: [ sh ] }\n    - { exe: /bin/busybox, names: [ mkdir, touch ] } # 2 (mkdir 1, touch 1)\n',
    );
    expect(r.text).toContain('  write:\n    - "/var/**"\n    - /data # 1\n    - /data/out.txt # 2\n');
    expect(r.text).toContain('posture: { allowRoot: true }\n');
    // With its base defined beside it, the merged file compiles and allows the whole behaviour.
    const rs = compile(`${r.text}---\napiVersion: runwatch/v1\nkind: ImageProfile\nname: base\n`);
    expect(activity(rs, toolsBehaviour(c), c)).toEqual([]);
  });

  it('adds nothing the second time, and replaces its own coverage comment instead of stacking them', () => {
    const once = mergeInto(existing, toolsBehaviour(c));
    const twice = mergeInto(once.text, toolsBehaviour(c));
    expect(formatAdded(twice)).toBe('profile "tools": nothing to add; everything observed is already allowed\n');
    expect(twice.text.match(/# runwatch learn:/g)).toHaveLength(1);
    expect(twice.text).toContain('0 new entries');
    expect(
      withoutTimes(twice.text)
        .replace(/# Merged into .*\n/, '')
        .replace(/# Coverage: .*\n/, ''),
    ).toBe(
      withoutTimes(once.text)
        .replace(/# Merged into .*\n/, '')
        .replace(/# Coverage: .*\n/, ''),
    );
  });

  it('merges into a freshly learned profile the same way', () => {
    const first = fresh(toolsBehaviour(c).slice(0, 3), c);
    const r = mergeInto(first.text, toolsBehaviour(c));
    expect(r.added.map((a) => a.list)).toEqual([
      'process.allow',
      'process.allow',
      'files.write',
      'files.write',
      'files.write',
      'files.write',
      'files.write',
      'files.write',
      'network.listen',
      'network.connect',
    ]);
    expect(r.text.match(/# runwatch learn:/g)).toHaveLength(1);
    compile(r.text);
  });

  it('refuses files it cannot use, saying where', () => {
    const missing = path.join(dir, 'missing.yaml');
    expect(() => readMergeTarget(missing, { images: [IMAGE] })).toThrow(expect.objectContaining({ code: 'RW_RULE_READ', file: missing }));
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'apiVersion: runwatch/v1\nkind: ImageProfile\nname: x\nprocess:\n  allow: [/bin/sh]\n  deny: [/bin/bash]\n');
    const err = (() => {
      try {
        readMergeTarget(bad, { images: [IMAGE] });
      } catch (e) {
        return e;
      }
    })() as RunwatchErrors;
    expect(err).toBeInstanceOf(RunwatchErrors);
    expect(err.errors.map((e) => [e.code, e.line, e.field])).toEqual([['RW_RULE_UNKNOWN_KEY', 6, 'process.deny']]);
    const two = path.join(dir, 'two.yaml');
    writeFileSync(two, 'apiVersion: runwatch/v1\nkind: ImageProfile\nname: a\n---\napiVersion: runwatch/v1\nkind: ImageProfile\nname: b\n');
    expect(() => readMergeTarget(two, { images: [IMAGE] })).toThrow(/holds 2 profiles \(a, b\); choose one with --name/);
    expect(readMergeTarget(two, { images: [IMAGE], name: 'b' }).name).toBe('b');
    expect(() => readMergeTarget(two, { images: [IMAGE], name: 'c' })).toThrow(RunwatchError);
  });
});
