import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RunwatchErrors } from '../../../agent/errors.js';
import { compileRuleset, loadRuleset } from '../../../agent/engine/rule-compiler.js';
import { loadRuleDocuments, parseRuleText } from '../../../agent/engine/rule-loader.js';
import { rulesJsonSchema } from '../../../agent/engine/rule-schema.js';
import { ruleTestsJsonSchema } from '../../../agent/engine/rule-tests.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const broken = (name: string) => path.join(root, 'test/fixtures/rules/broken', name);
const opts = { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } };

function errorsOf(paths: string[]) {
  try {
    loadRuleset(paths, opts);
  } catch (err) {
    if (err instanceof RunwatchErrors)
      return err.errors.map((e) => ({
        code: e.code,
        file: e.file && path.basename(e.file),
        line: e.line,
        column: e.column,
        field: e.field,
        message: e.message,
      }));
    throw err;
  }
  throw new Error('loaded without errors');
}

function compileText(text: string) {
  const parsed = parseRuleText(text, '/rules/x.yaml');
  return [...parsed.errors, ...compileRuleset(parsed.docs, opts).errors].map((e) => ({ code: e.code, line: e.line, field: e.field, message: e.message }));
}

describe('rule validation: broken fixtures, each with its exact location', () => {
  it('bad YAML', () => {
    expect(errorsOf([broken('bad-yaml.yaml')])).toEqual([
      { code: 'RW_RULE_YAML', file: 'bad-yaml.yaml', line: 6, column: 1, field: undefined, message: expect.stringMatching(/Flow sequence/) },
    ]);
  });
  it('unknown key, located at the key', () => {
    expect(errorsOf([broken('unknown-key.yaml')])).toEqual([
      { code: 'RW_RULE_UNKNOWN_KEY', file: 'unknown-key.yaml', line: 5, column: 1, field: 'proces', message: 'unknown key "proces"' },
    ]);
  });
  it('wrong type', () => {
    expect(errorsOf([broken('wrong-type.yaml')])).toEqual([
      {
        code: 'RW_RULE_INVALID',
        file: 'wrong-type.yaml',
        line: 6,
        column: 10,
        field: 'files.write',
        message: expect.stringMatching(/expected array, received string/),
      },
    ]);
  });
  it('bad glob', () => {
    expect(errorsOf([broken('bad-glob.yaml')])).toEqual([
      {
        code: 'RW_RULE_BAD_GLOB',
        file: 'bad-glob.yaml',
        line: 8,
        column: 7,
        field: 'process.allow[1]',
        message: 'bad glob "/usr/bin/[ab": has a "[" that is never closed',
      },
    ]);
  });
  it('bad CIDR', () => {
    expect(errorsOf([broken('bad-cidr.yaml')])).toEqual([
      {
        code: 'RW_RULE_BAD_CIDR',
        file: 'bad-cidr.yaml',
        line: 8,
        column: 7,
        field: 'network.connect[1]',
        message: expect.stringMatching(/"\/33" is not a prefix length between 0 and 32/),
      },
    ]);
  });
  it('unknown extends, with a suggestion', () => {
    expect(errorsOf([broken('unknown-extends.yaml')])).toEqual([
      {
        code: 'RW_RULE_EXTENDS',
        file: 'unknown-extends.yaml',
        line: 9,
        column: 11,
        field: 'extends[0]',
        message: 'profile "child" extends "bsae", which is not defined (did you mean "base"?)',
      },
    ]);
  });
  it('extends cycle, located at the entry that closes it', () => {
    expect(errorsOf([broken('extends-cycle.yaml')])).toEqual([
      { code: 'RW_RULE_EXTENDS', file: 'extends-cycle.yaml', line: 15, column: 11, field: 'extends[0]', message: 'extends cycle: a → b → c → a' },
    ]);
  });
  it('an apiVersion this runwatch does not read', () => {
    expect(errorsOf([broken('bad-version.yaml')])).toEqual([
      {
        code: 'RW_RULE_VERSION',
        file: 'bad-version.yaml',
        line: 1,
        column: 13,
        field: 'apiVersion',
        message: 'unsupported apiVersion "runwatch/v2"; this runwatch reads runwatch/v1',
      },
    ]);
  });
  it('reports every error of every file at once', () => {
    expect([...new Set(errorsOf([path.join(root, 'test/fixtures/rules/broken')]).map((e) => e.file))].sort()).toEqual([
      'bad-cidr.yaml',
      'bad-glob.yaml',
      'bad-version.yaml',
      'bad-yaml.yaml',
      'extends-cycle.yaml',
      'unknown-extends.yaml',
      'unknown-key.yaml',
      'wrong-type.yaml',
    ]);
  });
  it('a missing path', () => {
    expect(errorsOf([broken('nope.yaml')])).toEqual([
      expect.objectContaining({ code: 'RW_RULE_READ', file: 'nope.yaml', message: expect.stringMatching(/ENOENT/) }),
    ]);
  });
});

describe('rule validation: documents', () => {
  const head = 'apiVersion: runwatch/v1\nkind: ImageProfile\n';
  it('unknown kind and missing apiVersion', () => {
    expect(compileText('apiVersion: runwatch/v1\nkind: Profile\nname: x\n')).toEqual([
      { code: 'RW_RULE_INVALID', line: 2, field: 'kind', message: 'unknown kind "Profile"; known kinds: ImageProfile, ImagePolicy, Detection' },
    ]);
    expect(compileText('kind: ImageProfile\nname: x\n')).toEqual([
      { code: 'RW_RULE_VERSION', line: 1, field: undefined, message: expect.stringMatching(/apiVersion is missing/) },
    ]);
    expect(compileText('- a\n- b\n')).toEqual([expect.objectContaining({ code: 'RW_RULE_INVALID', line: 1 })]);
  });
  it('duplicate profile names and a second policy', () => {
    const text = `${head}name: a\n---\n${head}name: a\n---\napiVersion: runwatch/v1\nkind: ImagePolicy\n---\napiVersion: runwatch/v1\nkind: ImagePolicy\n`;
    expect(compileText(text)).toEqual([
      { code: 'RW_RULE_DUPLICATE', line: 7, field: 'name', message: 'profile "a" is already defined at /rules/x.yaml:3' },
      { code: 'RW_RULE_DUPLICATE', line: 13, field: 'kind', message: 'a second ImagePolicy; the first is at /rules/x.yaml:9 (one policy per ruleset)' },
    ]);
  });
  it('checks names, capabilities, registries, severities and net entries', () => {
    const text = `${head}name: x\nimages: ["acme/ web"]\nprocess:\n  allow:\n    - { exe: /bin/busybox, names: [/bin/sh] }\nnetwork:\n  listen: [http:80]\nposture:\n  allowCapabilities: [SYS_ADMN]\n  allowMounts: [relative/path]\n---\napiVersion: runwatch/v1\nkind: ImagePolicy\nregistries: [docker.io/library]\nseverities: { process.not_alowed: high }\n`;
    expect(compileText(text)).toEqual([
      { code: 'RW_RULE_UNKNOWN_KEY', line: 17, field: 'severities.process.not_alowed', message: 'unknown key "process.not_alowed"' },
      { code: 'RW_RULE_BAD_GLOB', line: 4, field: 'images[0]', message: expect.stringMatching(/white space/) },
      { code: 'RW_RULE_INVALID', line: 7, field: 'process.allow[0].names[0]', message: expect.stringMatching(/plain name/) },
      { code: 'RW_RULE_INVALID', line: 9, field: 'network.listen[0]', message: expect.stringMatching(/"http" is not a protocol/) },
      { code: 'RW_RULE_INVALID', line: 11, field: 'posture.allowCapabilities[0]', message: 'unknown capability "SYS_ADMN"' },
      { code: 'RW_RULE_BAD_GLOB', line: 12, field: 'posture.allowMounts[0]', message: expect.stringMatching(/absolute/) },
    ]);
  });
  it('enforce mode is not available yet', () => {
    expect(compileText(`${head}name: x\nmode: enforce\n`)).toEqual([expect.objectContaining({ code: 'RW_RULE_INVALID', line: 4, field: 'mode' })]);
  });
  it('an empty file and empty documents load as nothing', () => {
    expect(compileText('')).toEqual([]);
    expect(compileText('---\n---\n')).toEqual([]);
  });
});

describe('shipped rules and schemas', () => {
  it('every file in rules/ validates', () => {
    const loaded = loadRuleDocuments([path.join(root, 'rules')]);
    expect(loaded.errors.map((e) => e.format())).toEqual([]);
    const { ruleset, errors } = compileRuleset(loaded.docs, opts, loaded.files);
    expect(errors.map((e) => e.format())).toEqual([]);
    expect(ruleset!.profiles.map((p) => p.name).sort()).toEqual(['nginx', 'postgres', 'redis']);
    expect(ruleset!.policy.file).toBe(path.join(root, 'rules/policy.yaml'));
  });
  it('the test fixtures for the engine and for integration validate', () => {
    for (const dir of ['engine', 'integration']) expect(() => loadRuleset([path.join(root, 'test/fixtures/rules', dir)], opts)).not.toThrow();
  });
  it('schema/*.schema.json are the schemas the code validates with (regenerate: runwatch rules schema [--tests])', () => {
    const read = (f: string) => JSON.parse(readFileSync(path.join(root, 'schema', f), 'utf8')) as unknown;
    expect(read('runwatch-rules.schema.json')).toEqual(rulesJsonSchema());
    expect(read('runwatch-rule-tests.schema.json')).toEqual(ruleTestsJsonSchema());
  });
});
