import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunwatchError } from '../../../agent/errors.js';
import { loadRuleset } from '../../../agent/engine/rule-compiler.js';
import type { Ruleset } from '../../../agent/engine/ruleset.js';
import { RulesWatcher } from '../../../agent/engine/rules-watcher.js';
import { silentLogger } from '../../../agent/log.js';

const profile = (name: string, image: string) => `apiVersion: runwatch/v1\nkind: ImageProfile\nname: ${name}\nimages: [${image}]\n`;

function waitFor<T>(probe: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      const v = probe();
      if (v !== undefined) return resolve(v);
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function watched(files: Record<string, string>) {
  const dir = mkdtempSync(path.join(tmpdir(), 'rw-watch-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  const load = () => loadRuleset([dir], { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } });
  const state = { current: load(), reloads: [] as Ruleset[], failures: [] as RunwatchError[][] };
  const watcher = new RulesWatcher({
    paths: [dir],
    debounceMs: 50,
    load,
    log: silentLogger,
    onReload: (rs) => {
      state.current = rs;
      state.reloads.push(rs);
    },
    onError: (errors) => state.failures.push([...errors]),
  });
  await watcher.start();
  cleanups.push(() => watcher.close());
  return { dir, state, watcher };
}

describe('RulesWatcher (real files)', () => {
  it('swaps in a complete new ruleset when a file changes, is added or removed', async () => {
    const { dir, state } = await watched({ 'a.yaml': profile('a', 'acme/a') });
    expect(state.current.profiles.map((p) => p.name)).toEqual(['a']);

    writeFileSync(path.join(dir, 'b.yaml'), profile('b', 'acme/b'));
    await waitFor(() => (state.current.profiles.length === 2 ? true : undefined), 'b.yaml to be loaded');
    expect(state.current.profiles.map((p) => p.name)).toEqual(['a', 'b']);

    // An editor's atomic save: write a temp file, rename it over the original.
    writeFileSync(path.join(dir, '.a.yaml.tmp'), profile('a2', 'acme/a'));
    renameSync(path.join(dir, '.a.yaml.tmp'), path.join(dir, 'a.yaml'));
    await waitFor(() => (state.current.profile('a2') ? true : undefined), 'a.yaml to be replaced');

    rmSync(path.join(dir, 'b.yaml'));
    await waitFor(() => (state.current.profiles.length === 1 ? true : undefined), 'b.yaml to be dropped');
    expect(state.failures).toEqual([]);
  });

  it('keeps the last good ruleset when a change breaks it and reports where', async () => {
    const { dir, state } = await watched({ 'a.yaml': profile('a', 'acme/a') });
    const good = state.current;
    writeFileSync(path.join(dir, 'a.yaml'), `${profile('a', 'acme/a')}process:\n  allow: ["/usr/bin/[x"]\n`);
    const errors = await waitFor(() => state.failures[0], 'the reload to fail');
    expect(errors.map((e) => [path.basename(e.file!), e.line, e.field, e.code])).toEqual([['a.yaml', 6, 'process.allow[0]', 'RW_RULE_BAD_GLOB']]);
    expect(state.current).toBe(good);
    expect(state.reloads).toEqual([]);

    writeFileSync(path.join(dir, 'a.yaml'), profile('fixed', 'acme/a'));
    await waitFor(() => (state.current.profile('fixed') ? true : undefined), 'the fixed file to load');
  });

  it('ignores files that are not rules', async () => {
    const { dir, state, watcher } = await watched({ 'a.yaml': profile('a', 'acme/a') });
    writeFileSync(path.join(dir, 'notes.txt'), 'not yaml: [');
    writeFileSync(path.join(dir, 'a.cases.yaml'), 'not rules: [');
    writeFileSync(path.join(dir, 'b.yaml'), profile('b', 'acme/b'));
    await waitFor(() => (state.current.profile('b') ? true : undefined), 'b.yaml to be loaded');
    expect(state.failures).toEqual([]);
    expect(watcher.stats.failures).toBe(0);
  });
});
