import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { listRuleTestFiles, loadRuleTests, runRuleTestFile } from '../../agent/engine/rule-tests.js';
import type { Ruleset } from '../../agent/engine/ruleset.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shippedRules = path.resolve(here, '../../rules');
const opts = { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 }, defaultRules: [shippedRules] };
const cache = new Map<string, Ruleset>();

/** The same *.cases.yaml files `runwatch rules test` runs, one vitest case per rule case. */
const { files } = listRuleTestFiles([here]);

describe('rule test cases (test/rules/*.cases.yaml)', () => {
  it('finds the shipped cases files', () => {
    expect(files.map((f) => path.basename(f))).toEqual(
      expect.arrayContaining(['nginx.cases.yaml', 'redis.cases.yaml', 'postgres.cases.yaml', 'policy.cases.yaml', 'engine.cases.yaml']),
    );
  });
  for (const file of files) {
    const { doc } = loadRuleTests(file);
    describe(`${path.basename(file)} (${doc.name})`, () => {
      const results = runRuleTestFile(file, opts, cache);
      for (const r of results) {
        it(`${r.name} (line ${r.line})`, () => {
          expect(r.problems).toEqual([]);
        });
      }
    });
  }
});
