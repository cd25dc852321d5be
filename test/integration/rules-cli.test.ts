import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { runCli } from '../helpers/cli.js';

const root = path.resolve('.');
const rel = (p: string) => path.relative(process.cwd(), path.join(root, p));

async function cli(args: string[]) {
  const run = runCli(args);
  const code = await run.exited;
  return { code, out: run.stdout(), err: run.stderr() };
}

/** The built `runwatch rules …` commands as a rule writer runs them (build first: npx tsc -p tsconfig.json). */
describe('runwatch rules (real process)', () => {
  it('validate: the shipped rules are valid', async () => {
    const r = await cli(['rules', 'validate']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ok: \d+ files, 3 profiles, \d+ allow entries, policy: .*rules\/policy\.yaml\n$/);
  });

  it('validate: every error with file:line:column and field, exit 1', async () => {
    const r = await cli(['rules', 'validate', rel('test/fixtures/rules/broken')]);
    expect(r.code).toBe(1);
    const dir = rel('test/fixtures/rules/broken');
    for (const line of [
      `${dir}/bad-cidr.yaml:8:7: network.connect[1]: bad connect entry "tcp:10.0.0.0/33:5432": "/33" is not a prefix length between 0 and 32 [RW_RULE_BAD_CIDR]`,
      `${dir}/bad-glob.yaml:8:7: process.allow[1]: bad glob "/usr/bin/[ab": has a "[" that is never closed [RW_RULE_BAD_GLOB]`,
      `${dir}/unknown-key.yaml:5:1: proces: unknown key "proces" [RW_RULE_UNKNOWN_KEY]`,
      `${dir}/wrong-type.yaml:6:10: files.write: Invalid input: expected array, received string [RW_RULE_INVALID]`,
      `${dir}/extends-cycle.yaml:15:11: extends[0]: extends cycle: a → b → c → a [RW_RULE_EXTENDS]`,
      `${dir}/unknown-extends.yaml:9:11: extends[0]: profile "child" extends "bsae", which is not defined (did you mean "base"?) [RW_RULE_EXTENDS]`,
    ]) {
      expect(r.err).toContain(line);
    }
    expect(r.err).toMatch(/8 errors in 8 files\n$/);
  });

  it('test: runs the shipped cases; a failing case names its file and line', async () => {
    const ok = await cli(['rules', 'test']);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^\d+ passed, 0 failed \(\d+ files\)\n$/);

    const dir = mkdtempSync(path.join(tmpdir(), 'rw-cases-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'mine.cases.yaml');
    writeFileSync(
      file,
      `apiVersion: runwatch/v1\nkind: RuleTests\nname: mine\ncontainer: { image: nginx:1.27 }\ncases:\n  - name: nginx runs\n    event: { kind: process_exec, exe: /usr/sbin/nginx }\n    expect: []\n  - name: wrongly expected to pass\n    event: { kind: process_exec, exe: /usr/bin/wget }\n    expect: []\n`,
    );
    const bad = await cli(['rules', 'test', file]);
    expect(bad.code).toBe(1);
    expect(bad.out).toContain(
      `FAIL  ${file}:9  mine: wrongly expected to pass\n        unexpected process.not_allowed (high): Process /usr/bin/wget ran in container test (nginx:1.27), but it is not in process.allow of profile "nginx"`,
    );
    expect(bad.out).toMatch(/1 passed, 1 failed \(1 file\)\n$/);
  });

  it('explain: which profile applies, which entry allows, which line would allow', async () => {
    const allowed = await cli(['rules', 'explain', '--image', 'nginx:1.27', '--exe', '/usr/sbin/nginx', '--listen', 'tcp:80']);
    expect(allowed.code).toBe(0);
    expect(allowed.out).toContain('image    nginx:1.27 → docker.io/library/nginx:1.27 (registry docker.io)');
    expect(allowed.out).toMatch(/profile {2}nginx \(.*rules\/nginx\.yaml:\d+\), matched by images: "nginx"/);
    expect(allowed.out).toMatch(/exe \/usr\/sbin\/nginx: ALLOWED by "\/usr\/sbin\/nginx" of profile nginx \(.*rules\/nginx\.yaml:\d+\)/);
    expect(allowed.out).toMatch(/listen tcp:80: ALLOWED by "tcp:80" of profile nginx/);

    const denied = await cli(['rules', 'explain', '--image', 'nginx:alpine', '--exe', '/bin/busybox', '--name', 'nc', '--connect', 'tcp:[2001:db8::1]:443']);
    expect(denied.code).toBe(1);
    expect(denied.out).toContain('exe /bin/busybox as "nc": NOT ALLOWED → process.not_allowed (high)');
    expect(denied.out).toContain('- { exe: /bin/busybox, names: [nc] }');
    expect(denied.out).toContain('connect tcp:[2001:db8::1]:443: NOT ALLOWED → network.connect_not_allowed (high)');
    expect(denied.out).toContain('- "tcp:[2001:db8::1]:443"');

    const unprofiled = await cli(['rules', 'explain', '--image', 'acme/app:1', '--write', '/srv/data/x']);
    expect(unprofiled.code).toBe(0);
    expect(unprofiled.out).toContain('image.unprofiled (low)');
    expect(unprofiled.out).toContain('write /srv/data/x: not checked (no profile applies)');

    // Without a profile no allowlist checks a write, but a baseline detection (every container) still does.
    const detected = await cli(['rules', 'explain', '--image', 'acme/app:1', '--write', '/etc/shadow']);
    expect(detected.code).toBe(1);
    expect(detected.out).toMatch(/write \/etc\/shadow: NOT ALLOWED → baseline\.\w+ \(high\)/);
    expect(detected.out).toContain('write /etc/shadow: no profile applies, so no allowlist checks it');
  });

  it('help and usage errors', async () => {
    for (const sub of ['validate', 'test', 'explain', 'schema']) {
      const r = await cli(['rules', sub, '--help']);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`^Usage: runwatch rules ${sub}`));
    }
    expect((await cli(['rules', 'explain', '--exe', '/bin/sh'])).code).toBe(2);
    expect((await cli(['rules', 'explain', '--image', 'x', '--listen', 'tcp:1-2'])).code).toBe(2);
    expect((await cli(['rules', 'nope'])).code).toBe(2);
    expect((await cli(['rules', 'validate', '--bogus'])).code).toBe(2);
  });
});
