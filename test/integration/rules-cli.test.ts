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
    expect(r.out).toMatch(/^ok: \d+ files, 3 profiles, \d+ allow entries, 25 detections, policy: .*rules\/policy\.yaml\n$/);
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
    expect(detected.out).toContain('write /etc/shadow: not checked (no profile applies)');
    expect(detected.out).toMatch(/write \/etc\/shadow: DETECTED → baseline\.user_management \(high, MITRE T1136\.001\) at .*rules\/baseline\.yaml:\d+\n/);
  });

  it('explain: detections that fire, and the ones a profile or the policy turned off, with their lines; --json', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-explain-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const policy = path.join(dir, 'policy.yaml');
    const ci = path.join(dir, 'ci.yaml');
    writeFileSync(policy, 'apiVersion: runwatch/v1\nkind: ImagePolicy\nseverities:\n  baseline.build_tool: "off"\n  baseline.package_manager: low\n');
    writeFileSync(
      ci,
      'apiVersion: runwatch/v1\nkind: ImageProfile\nname: ci-base\ndetections:\n  disable: [baseline.write_binary_dir]\n---\n' +
        'apiVersion: runwatch/v1\nkind: ImageProfile\nname: ci\nimages: ["acr.example.io/build/*"]\nextends: [ci-base]\nprocess:\n  allow: ["/usr/bin/*"]\nfiles:\n  write: ["/usr/local/bin/**"]\n',
    );
    const explainCi = (...args: string[]) =>
      cli(['rules', 'explain', '--rules', path.join(root, 'rules/baseline.yaml'), '--rules', dir, '--image', 'acr.example.io/build/runner:7', ...args]);

    const apt = await explainCi('--exe', '/usr/bin/apt-get', '--args', 'install -y curl');
    expect(apt.code).toBe(1);
    expect(apt.out).toContain(`baseline.build_tool: off by ImagePolicy.severities (${policy}:4)`);
    expect(apt.out).toContain(`baseline.write_binary_dir: off by detections.disable of profile ci-base (${ci}:5)`);
    expect(apt.out).toContain(`baseline.package_manager: low (default medium) by ImagePolicy.severities (${policy}:5)`);
    expect(apt.out).toContain(`exe /usr/bin/apt-get: ALLOWED by "/usr/bin/*" of profile ci (${ci}:13)`);
    expect(apt.out).toMatch(/exe \/usr\/bin\/apt-get: DETECTED → baseline\.package_manager \(low, re-rated from medium; MITRE T1105\)/);
    expect(apt.out).toContain('Package Manager Run In A Container: process /usr/bin/apt-get ran: "apt-get install -y curl"');

    // Allowed, and every detection that matches is off for this image: exit 0.
    const quiet = await explainCi('--write', '/usr/local/bin/tool', '--exe', '/usr/bin/gcc', '--args', '-O2 -o x x.c');
    expect(quiet.code).toBe(0);
    expect(quiet.out).toContain(
      `write /usr/local/bin/tool: baseline.write_binary_dir matches, but is off for this image by detections.disable of profile ci-base (${ci}:5)`,
    );
    expect(quiet.out).toContain(`exe /usr/bin/gcc: baseline.build_tool matches, but is off for this image by ImagePolicy.severities (${policy}:4)`);

    const json = await explainCi('--exe', '/usr/bin/gcc', '--json');
    expect(json.code).toBe(0);
    const e = JSON.parse(json.out) as { profile: { name: string }; activities: { suppressed: unknown[]; event: { args: string[] } }[]; wouldAlert: boolean };
    expect(e.profile.name).toBe('ci');
    expect(e.wouldAlert).toBe(false);
    expect(e.activities[0].suppressed).toEqual([{ id: 'baseline.build_tool', reasons: [{ by: 'ImagePolicy.severities', file: policy, line: 4 }] }]);

    // An unknown detection id in severities is an error naming file:line:field, like an unknown rule id.
    writeFileSync(policy, 'apiVersion: runwatch/v1\nkind: ImagePolicy\nseverities:\n  baseline.packge_manager: low\n');
    const bad = await explainCi('--exe', '/usr/bin/gcc');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(
      /policy\.yaml:4:3: severities\.baseline\.packge_manager: unknown key "baseline\.packge_manager": .*\(did you mean "baseline\.package_manager"\?\) \[RW_RULE_UNKNOWN_KEY\]/,
    );
  });

  it('help and usage errors', async () => {
    for (const sub of ['validate', 'test', 'explain', 'schema']) {
      const r = await cli(['rules', sub, '--help']);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(new RegExp(`^Usage: runwatch rules ${sub}`));
    }
    expect((await cli(['rules', 'explain', '--exe', '/bin/sh'])).code).toBe(2);
    expect((await cli(['rules', 'explain', '--image', 'x', '--listen', 'tcp:1-2'])).code).toBe(2);
    expect((await cli(['rules', 'explain', '--image', 'x', '--args', '-c id'])).code).toBe(2);
    expect((await cli(['rules', 'explain', '--image', 'x', '--write', '/x', '--chmod', '9'])).code).toBe(2);
    expect((await cli(['rules', 'explain', '--image', 'x', '--exe', '/bin/sh', '--args', "'open"])).code).toBe(2);
    expect((await cli(['rules', 'nope'])).code).toBe(2);
    expect((await cli(['rules', 'validate', '--bogus'])).code).toBe(2);
  });
});
