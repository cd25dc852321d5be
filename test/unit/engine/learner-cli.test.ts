import { afterEach, describe, expect, it, vi } from 'vitest';
import { learnCommand, parseDuration, profileNameFor } from '../../../agent/cli/learn-command.js';

describe('runwatch learn: arguments', () => {
  afterEach(() => vi.restoreAllMocks());

  it('reads durations', () => {
    expect(parseDuration('90')).toBe(90_000);
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1.5m')).toBe(90_000);
    for (const bad of ['', 'soon', '5 m', '5x', 'm5', '-5s']) expect(parseDuration(bad)).toBeUndefined();
  });

  it('names a profile after the repository', () => {
    expect(profileNameFor('runwatch-test/tools:1')).toBe('tools');
    expect(profileNameFor('acr.acme.example/team/web:*')).toBe('web');
    expect(profileNameFor('**/nginx@sha256:*')).toBe('nginx');
    expect(profileNameFor('*')).toBe('learned');
  });

  it('refuses bad combinations before starting anything (exit 2) and prints help (exit 0)', async () => {
    const err: string[] = [];
    const out: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((t) => (err.push(String(t)), true));
    vi.spyOn(process.stdout, 'write').mockImplementation((t) => (out.push(String(t)), true));
    expect(await learnCommand([])).toBe(2);
    expect(err.pop()).toMatch(/^runwatch learn: --image GLOB \(or --shadow CANDIDATE\) is required\n/);
    expect(await learnCommand(['--shadow', 'c.yaml', '--image', 'x'])).toBe(2);
    expect(err.pop()).toMatch(/--shadow takes no --image/);
    expect(await learnCommand(['--image', 'web:[1'])).toBe(2);
    expect(err.pop()).toMatch(/--image "web:\[1": has a "\[" that is never closed/);
    expect(await learnCommand(['--image', 'web', '--for', 'soon'])).toBe(2);
    expect(err.pop()).toMatch(/--for "soon": give a duration/);
    expect(await learnCommand(['--image', 'web', '--name', 'my profile'])).toBe(2);
    expect(err.pop()).toMatch(/--name "my profile": a profile name is/);
    expect(await learnCommand(['--image', 'web', '--out', '/nonexistent-dir/p.yaml'])).toBe(2);
    expect(err.pop()).toMatch(/folder \/nonexistent-dir does not exist/);
    expect(await learnCommand(['--image', 'web', '--merge', '/nonexistent-dir/p.yaml'])).toBe(2);
    expect(err.pop()).toMatch(/^runwatch learn: \/nonexistent-dir\/p.yaml: cannot read the profile to merge into: ENOENT \[RW_RULE_READ\]/);
    expect(out).toEqual([]);
    expect(await learnCommand(['--help'])).toBe(0);
    expect(out.join('')).toMatch(/^Usage: runwatch learn --image GLOB .*\n\s+runwatch learn --shadow CANDIDATE/);
  });
});
