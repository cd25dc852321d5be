import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { parse } from 'yaml';
import type { RunwatchRecord } from '../../agent/events/types.js';
import { runCli } from '../helpers/cli.js';
import { docker, dockerExec, runContainer, TEST_RUN_ID, TOOLS_IMAGE } from '../helpers/docker.js';
import { waitFor } from '../helpers/test-agent.js';

/**
 * The built `runwatch learn` as a real process: --for/--out, --merge (a dry run printing the diff) and
 * --shadow, each watching a real container. The image gets a tag of this run's own so containers of
 * other test runs on this engine are not learned.
 */
const IMAGE = `runwatch-test/learn-cli-${TEST_RUN_ID}:1`;
const NAME = `learn-cli-${TEST_RUN_ID}`;
const FOR = '15s';
const dir = mkdtempSync(path.join(tmpdir(), 'rw-learn-cli-'));
const cfg = path.join(dir, 'config.yaml');
const profile = path.join(dir, 'tools.yaml');

beforeAll(async () => {
  await docker(['tag', TOOLS_IMAGE, IMAGE]);
  mkdirSync(path.join(dir, 'rules'));
  writeFileSync(
    cfg,
    [
      `stateDir: ${dir}`,
      `outputs: { jsonl: { path: ${path.join(dir, 'records.jsonl')} } }`,
      'pipeline: { groupWindowSeconds: 0 }',
      `rules: { watch: false, paths: [${path.join(dir, 'rules')}] }`,
      'sensors: { network: { intervalSeconds: 0.5 } }',
      'metrics: { enabled: false }',
      '',
    ].join('\n'),
  );
});
afterAll(async () => {
  await docker(['rmi', IMAGE]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/** The end of a long stderr, for failure messages. */
const tail = (text: string) => text.slice(-3000);

/** Runs `runwatch learn ARGS`, and once it watches, a container doing the learned behaviour plus `extra`. */
async function learnWhile(args: string[], extra: string[][] = []): Promise<{ code: number | null; stdout: string; stderr: string; id: string }> {
  const run = runCli(['learn', ...args, '--config', cfg]);
  onTestFinished(() => {
    run.child.kill('SIGKILL');
  });
  await waitFor(
    () => run.stderr().includes('"runwatch running"'),
    30_000,
    () => `the agent to start; stderr: ${tail(run.stderr())}`,
  );
  const id = await runContainer({ image: IMAGE, cmd: ['sleep', 'infinity'] });
  await dockerExec(id, ['id']);
  await dockerExec(id, ['whoami']);
  await dockerExec(id, ['head', '-n1', '/etc/passwd']);
  await dockerExec(id, ['mkdir', '-p', '/var/cache/app', '/data']);
  await dockerExec(id, ['touch', ...[1, 2, 3, 4, 5, 6].map((i) => `/var/cache/app/item${i}`), '/data/out.txt']);
  await dockerExec(id, ['nc', '-l', '-p', '8080'], ['-d']);
  for (const cmd of extra) await dockerExec(id, cmd);
  const code = await run.exited;
  return { code, stdout: run.stdout(), stderr: run.stderr(), id };
}

describe('runwatch learn (built CLI, real containers)', () => {
  it('--for --out: writes a profile that validates, while image and posture records still go out', async () => {
    const r = await learnWhile(['--image', IMAGE, '--for', FOR, '--out', profile]);
    expect(r.code, tail(r.stderr)).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      new RegExp(
        `runwatch learn: wrote profile "${NAME}" to ${profile}; 1 container\\(s\\), \\d+ event\\(s\\), 12 entries added, \\d+ allowlist finding\\(s\\) muted\\n`,
      ),
    );
    const doc = parse(readFileSync(profile, 'utf8'));
    expect(doc).toMatchObject({ name: NAME, images: [IMAGE], network: { listen: ['tcp:8080'], connect: [] } });
    expect(doc.process.allow).toEqual([
      { exe: '/bin/busybox', names: ['mkdir', 'nc', 'touch'] },
      '/usr/bin/head',
      '/usr/bin/id',
      '/usr/bin/sleep',
      '/usr/bin/whoami',
    ]);
    expect(doc.files.write).toEqual(['/data', '/data/out.txt', '/var', '/var/cache', '/var/cache/app', '/var/cache/app/**']);

    const validate = runCli(['rules', 'validate', profile]);
    expect(await validate.exited, tail(validate.stderr())).toBe(0);
    expect(validate.stdout()).toMatch(/^ok: 1 file, 1 profile, \d+ allow entries/);

    // stdout carried the profile's summary only; records meant for stdout went to stderr, and to the file as configured.
    const records = readFileSync(path.join(dir, 'records.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as RunwatchRecord)
      .filter((x) => x.container?.id === r.id);
    expect(records.map((x) => x.rule)).toEqual(expect.arrayContaining(['image.unprofiled', 'posture.root_user']));
    expect(records.filter((x) => /^(process|file|network)\./.test(x.rule))).toEqual([]);
    expect(r.stderr).toContain('"rule":"image.unprofiled"');
  });

  it('--merge: prints only what is new as a diff and writes nothing without --out', async () => {
    const before = readFileSync(profile, 'utf8');
    const r = await learnWhile(['--image', IMAGE, '--merge', profile, '--for', FOR], [['stat', '/']]);
    expect(r.code, tail(r.stderr)).toBe(0);
    expect(r.stdout, tail(r.stderr)).toBe(`profile "${NAME}" (${profile}): 1 entry to add\n+ process.allow: /usr/bin/stat  # 1\n`);
    expect(r.stderr).toContain('dry run, nothing written');
    expect(readFileSync(profile, 'utf8')).toBe(before);
  });

  it('--shadow: reports what the candidate would have flagged, per rule and subject, without alerting', async () => {
    const r = await learnWhile(
      ['--shadow', profile, '--for', FOR],
      [
        ['stat', '/'],
        ['stat', '/etc'],
      ],
    );
    expect(r.code, tail(r.stderr)).toBe(1);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(
      new RegExp(
        `^shadow run of ${profile} for \\d+s: 1 container matched, \\d+ events evaluated; the candidate would have raised 2 alerts \\(1 distinct\\):$`,
      ),
    );
    expect(lines.slice(2, 4).map((l) => l.trim().split(/\s{2,}/))).toEqual([
      ['count', 'rule', 'profile', 'subject', 'containers', 'allow with'],
      ['2', 'process.not_allowed', NAME, '/usr/bin/stat', '1', '- /usr/bin/stat'],
    ]);
    const records = readFileSync(path.join(dir, 'records.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as RunwatchRecord)
      .filter((x) => x.container?.id === r.id);
    expect(records.filter((x) => x.rule === 'process.not_allowed')).toEqual([]);
  });
});
