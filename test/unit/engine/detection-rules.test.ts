import { describe, expect, it } from 'vitest';
import { decide } from '../../../agent/engine/decide.js';
import { compileRuleset } from '../../../agent/engine/rule-compiler.js';
import { parseRuleText } from '../../../agent/engine/rule-loader.js';
import type { ContainerInfo, ProcessExecEvent } from '../../../agent/events/types.js';
import { containerInfo } from '../../helpers/container-info.js';

const FILE = '/rules/d.yaml';
const opts = { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } };

/** A Detection document's head; its `when:` starts at line 9. */
const head = (id: string, on = 'process_exec', severity = 'high') =>
  `apiVersion: runwatch/v1\nkind: Detection\nid: ${id}\ntitle: Test ${id}\ndescription: Detect ${id}.\nseverity: ${severity}\nmitre: T1059\non: ${on}\n`;

function problems(text: string) {
  const parsed = parseRuleText(text, FILE);
  return [...parsed.errors, ...compileRuleset(parsed.docs, opts).errors].map((e) => ({
    code: e.code,
    at: `${e.file}:${e.line}:${e.column}`,
    field: e.field,
    message: e.message,
  }));
}

function ruleset(text: string) {
  const { ruleset, errors } = compileRuleset(parseRuleText(text, FILE).docs, opts);
  if (!ruleset) throw new Error(errors.map((e) => e.format()).join('\n'));
  return ruleset;
}

const shell = (over: Partial<ProcessExecEvent> = {}): ProcessExecEvent => ({
  kind: 'process_exec',
  ts: 0,
  containerId: 'f'.repeat(64),
  pid: 2,
  ppid: 1,
  exe: '/bin/sh',
  args: ['sh'],
  uid: 0,
  ancestors: [],
  resolved: true,
  ...over,
});

/** The detection findings (rule: severity) a shell exec gets in a container of `image`. */
function detected(text: string, image: string, over: Partial<ContainerInfo> = {}): string[] {
  const rs = ruleset(text);
  return decide(rs, shell(), { container: containerInfo({ image, ...over }) })
    .filter((f) => f.rule.startsWith('t.'))
    .map((f) => `${f.rule}: ${f.severity}`);
}

describe('detection conditions: compile errors at file:line:column and field path', () => {
  it('an unknown field, at the key, listing the fields of the kind', () => {
    expect(problems(`${head('t.a')}when:\n  all:\n    - proc.nmae: sh\n`)).toEqual([
      {
        code: 'RW_RULE_UNKNOWN_KEY',
        at: `${FILE}:11:7`,
        field: 'when.all[0].proc.nmae',
        message: expect.stringMatching(/^unknown field "proc.nmae"; fields for process_exec: proc.exe, proc.name, .*ancestor.exe$/),
      },
    ]);
  });

  it('a field of another event kind', () => {
    expect(problems(`${head('t.a')}when:\n  any:\n    - proc.name: sh\n    - file.path: /etc/x\n`)).toEqual([
      {
        code: 'RW_RULE_INVALID',
        at: `${FILE}:12:18`,
        field: 'when.any[1].file.path',
        message: 'field "file.path" belongs to file_change events, but this detection is on: process_exec',
      },
    ]);
  });

  it('not, all and any used wrongly', () => {
    expect(problems(`${head('t.a')}when:\n  not:\n    - proc.name: sh\n`)).toEqual([
      {
        code: 'RW_RULE_INVALID',
        at: `${FILE}:11:5`,
        field: 'when.not',
        message: 'a condition is a mapping: { all: [...] }, { any: [...] }, { not: ... } or field: globs',
      },
    ]);
    expect(problems(`${head('t.a')}when:\n  all:\n    proc.name: sh\n`)).toEqual([
      { code: 'RW_RULE_INVALID', at: `${FILE}:11:5`, field: 'when.all', message: 'all takes a non-empty list of conditions' },
    ]);
    expect(problems(`${head('t.a')}when:\n  any: []\n`)).toEqual([
      { code: 'RW_RULE_INVALID', at: `${FILE}:10:8`, field: 'when.any', message: 'any takes a non-empty list of conditions' },
    ]);
    expect(problems(`${head('t.a')}when:\n  proc.name: sh\n  not: { proc.uid: "0" }\n`)).toEqual([
      {
        code: 'RW_RULE_INVALID',
        at: `${FILE}:10:3`,
        field: 'when',
        message: '"not" stands alone in its mapping; wrap field tests beside it in all: [...]',
      },
    ]);
  });

  it('a bad glob, also deep inside nested combinators', () => {
    expect(problems(`${head('t.a', 'file_change')}when:\n  file.path: ["/etc/**", "/usr/[ab"]\n`)).toEqual([
      { code: 'RW_RULE_BAD_GLOB', at: `${FILE}:10:26`, field: 'when.file.path[1]', message: 'bad glob "/usr/[ab": has a "[" that is never closed' },
    ]);
    expect(problems(`${head('t.a', 'file_change')}when:\n  file.path: etc/passwd\n`)).toEqual([
      {
        code: 'RW_RULE_BAD_GLOB',
        at: `${FILE}:10:14`,
        field: 'when.file.path',
        message: 'bad glob "etc/passwd": must be an absolute path starting with "/"',
      },
    ]);
    expect(problems(`${head('t.a')}when:\n  all:\n    - any:\n        - proc.name: sh\n        - not: { proc.args: ["-c", "[x"] }\n`)).toEqual([
      {
        code: 'RW_RULE_BAD_GLOB',
        at: `${FILE}:13:36`,
        field: 'when.all[0].any[1].not.proc.args[1]',
        message: 'bad glob "[x": has a "[" that is never closed',
      },
    ]);
  });

  it('a value that is neither a glob nor a list of globs, and a non-boolean for a boolean field', () => {
    expect(problems(`${head('t.a')}when:\n  proc.name: { sh: true }\n`)).toEqual([
      { code: 'RW_RULE_INVALID', at: `${FILE}:10:14`, field: 'when.proc.name', message: 'field "proc.name" takes a glob or a non-empty list of globs' },
    ]);
    expect(problems(`${head('t.a')}when:\n  proc.name: [sh, 3]\n`)).toEqual([
      { code: 'RW_RULE_INVALID', at: `${FILE}:10:14`, field: 'when.proc.name', message: 'field "proc.name" takes a glob or a non-empty list of globs' },
    ]);
    expect(problems(`${head('t.a')}when:\n  proc.tty: "yes"\n`)).toEqual([
      { code: 'RW_RULE_INVALID', at: `${FILE}:10:13`, field: 'when.proc.tty', message: 'field "proc.tty" takes true or false' },
    ]);
  });

  it("every error of every detection at once, and none for runwatch's own rule sets as ids", () => {
    const text = `${head('t.a')}when:\n  proc.nmae: sh\n---\n${head('process.shell')}when:\n  proc.name: sh\n`;
    expect(problems(text).map((p) => `${p.at} ${p.field}`)).toEqual([`${FILE}:14:5 id`, `${FILE}:10:3 when.proc.nmae`]);
    expect(problems(text)[0].message).toMatch(/^"process\." is for runwatch's own rule ids/);
  });
});

describe('detection exceptions', () => {
  const RULES = `${head('t.images')}when:\n  proc.name: sh\nexcept:\n  images: ["acme/build", "acr.example.io/ci/*:*"]
---
${head('t.profiles')}when:\n  proc.name: sh\nexcept:\n  profiles: [ci]
---
${head('t.always')}when:\n  proc.name: sh
---
apiVersion: runwatch/v1\nkind: ImageProfile\nname: ci\nimages: ["acme/ci"]
---
apiVersion: runwatch/v1\nkind: ImageProfile\nname: web\nimages: ["acme/web", "acme/build:web-*"]
`;

  it('except.images suppresses its detection for the matching images only, by tag or by repo digest', () => {
    expect(detected(RULES, 'acme/build:1')).toEqual(['t.profiles: high', 't.always: high']);
    expect(detected(RULES, 'docker.io/acme/build@sha256:' + 'b'.repeat(64))).toEqual(['t.profiles: high', 't.always: high']);
    expect(detected(RULES, 'acr.example.io/ci/runner:7')).toEqual(['t.profiles: high', 't.always: high']);
    // A pattern names the repository exactly: a longer name or another registry is not excepted.
    expect(detected(RULES, 'acme/builder:1')).toEqual(['t.images: high', 't.profiles: high', 't.always: high']);
    expect(detected(RULES, 'acr.example.io/ci:1')).toEqual(['t.images: high', 't.profiles: high', 't.always: high']);
    // Started by image id, matched through the repo digest.
    expect(detected(RULES, '4cd999290cf0', { imageRepoDigests: [`acme/build@sha256:${'c'.repeat(64)}`] })).toEqual(['t.profiles: high', 't.always: high']);
  });

  it("except.profiles suppresses its detection for that profile's containers only", () => {
    expect(detected(RULES, 'acme/ci:3')).toEqual(['t.images: high', 't.always: high']);
    expect(detected(RULES, 'acme/web:3')).toEqual(['t.images: high', 't.profiles: high', 't.always: high']);
    expect(detected(RULES, 'acme/unprofiled:3')).toEqual(['t.images: high', 't.profiles: high', 't.always: high']);
    // A profiled image can be excepted by both: by image, and by profile through another detection.
    expect(detected(RULES, 'acme/build:web-2')).toEqual(['t.profiles: high', 't.always: high']);
  });
});

describe('detections.disable', () => {
  const DETECTIONS = `${head('t.pkg')}when:\n  proc.name: sh\n---\n${head('t.shell')}when:\n  proc.name: sh\n`;
  const profile = (name: string, extra: string) => `---\napiVersion: runwatch/v1\nkind: ImageProfile\nname: ${name}\n${extra}`;

  it('is inherited through extends, at any depth, and stays with the profiles that extend', () => {
    const text =
      DETECTIONS +
      profile('base', 'detections:\n  disable: [t.pkg]\n') +
      profile('mid', 'extends: [base]\n') +
      profile('app', 'images: ["acme/app"]\nextends: [mid]\ndetections:\n  disable: [t.shell]\n') +
      profile('other', 'images: ["acme/other"]\n');
    expect(detected(text, 'acme/app:1')).toEqual([]);
    expect(detected(text, 'acme/other:1')).toEqual(['t.pkg: high', 't.shell: high']);
    expect(
      detected(
        text.replace('images: ["acme/app"]\nextends: [mid]\ndetections:\n  disable: [t.shell]\n', 'images: ["acme/app"]\nextends: [mid]\n'),
        'acme/app:1',
      ),
    ).toEqual(['t.shell: high']);
  });

  it('an unknown id is an error at the entry, with a suggestion', () => {
    expect(problems(DETECTIONS + profile('app', 'detections:\n  disable: [t.shell, t.pgk]\n'))).toEqual([
      { code: 'RW_RULE_INVALID', at: `${FILE}:27:22`, field: 'detections.disable[1]', message: 'unknown detection "t.pgk" (did you mean "t.pkg"?)' },
    ]);
  });

  it('is not checked when no detection is loaded (a profile folder validated alone)', () => {
    expect(problems(profile('app', 'detections:\n  disable: [t.pgk]\n').slice(4))).toEqual([]);
  });
});

describe('ImagePolicy.severities for detections', () => {
  const DETECTIONS = `${head('t.pkg', 'process_exec', 'medium')}when:\n  proc.name: sh\n---\n${head('t.shell')}when:\n  proc.name: sh\n`;
  const policy = (severities: string) => `---\napiVersion: runwatch/v1\nkind: ImagePolicy\nseverities:\n${severities}`;

  it('re-rates a detection, profiled or not, and leaves the others alone', () => {
    const text = `${DETECTIONS}${policy('  t.pkg: low\n')}---\napiVersion: runwatch/v1\nkind: ImageProfile\nname: app\nimages: ["acme/app"]\n`;
    expect(detected(text, 'acme/x:1')).toEqual(['t.pkg: low', 't.shell: high']);
    expect(detected(text, 'acme/app:1')).toEqual(['t.pkg: low', 't.shell: high']);
    expect(detected(DETECTIONS, 'acme/x:1')).toEqual(['t.pkg: medium', 't.shell: high']);
  });

  it('"off" turns a detection off for every container', () => {
    expect(detected(`${DETECTIONS}${policy('  t.shell: "off"\n')}`, 'acme/x:1')).toEqual(['t.pkg: medium']);
  });

  it('works beside overrides of built-in rules', () => {
    const rs = ruleset(`${DETECTIONS}${policy('  t.pkg: critical\n  image.unprofiled: "off"\n')}`);
    const info = containerInfo({ image: 'acme/x:1' });
    expect(decide(rs, { kind: 'container', ts: 0, action: 'start', containerId: info.id, info }, { container: info }).map((f) => f.rule)).not.toContain(
      'image.unprofiled',
    );
    expect(decide(rs, shell(), { container: info }).map((f) => `${f.rule}: ${f.severity}`)).toEqual(['t.pkg: critical', 't.shell: high']);
  });

  it('an id that is neither a rule nor a loaded detection is an unknown key, at the key, with a suggestion', () => {
    expect(problems(`${DETECTIONS}${policy('  t.pkg: low\n  t.shel: "off"\n')}`)).toEqual([
      {
        code: 'RW_RULE_UNKNOWN_KEY',
        at: `${FILE}:27:3`,
        field: 'severities.t.shel',
        message: 'unknown key "t.shel": no rule or loaded detection has this id (did you mean "t.shell"?)',
      },
    ]);
    // Keys in runwatch's own sets are checked by the schema, detections loaded or not.
    expect(problems(policy('  process.not_alowed: low\n').slice(4))).toEqual([
      { code: 'RW_RULE_UNKNOWN_KEY', at: `${FILE}:4:3`, field: 'severities.process.not_alowed', message: 'unknown key "process.not_alowed"' },
    ]);
    expect(problems(policy('  Not An Id: low\n').slice(4))).toEqual([
      { code: 'RW_RULE_UNKNOWN_KEY', at: `${FILE}:4:3`, field: 'severities.Not An Id', message: 'unknown key "Not An Id"' },
    ]);
    expect(problems(`${DETECTIONS}${policy('  t.pkg: loud\n')}`)).toEqual([
      expect.objectContaining({ code: 'RW_RULE_INVALID', at: `${FILE}:26:10`, field: 'severities.t.pkg' }),
    ]);
  });
});
