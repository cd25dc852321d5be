import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { RunwatchRecord } from '../../agent/events/types.js';
import { runCli } from '../helpers/cli.js';
import { dockerExec, runContainer } from '../helpers/docker.js';
import { waitFor } from '../helpers/test-agent.js';

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), 'rw-cli-'));
}

describe('runwatch run (real process)', () => {
  it('exits non-zero with one clear line when the Docker socket is unreachable', async () => {
    const dir = tempDir();
    const cfg = path.join(dir, 'c.yaml');
    writeFileSync(
      cfg,
      `stateDir: ${dir}\ndocker:\n  socket: ${dir}/nope.sock\noutputs:\n  jsonl: { path: "" }\nsensors: { process: { enabled: false }, file: { enabled: false }, network: { enabled: false } }\nmetrics: { enabled: false }\n`,
    );
    const run = runCli(['run', '--config', cfg]);
    expect(await run.exited).not.toBe(0);
    const errLines = run
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('runwatch:'));
    expect(errLines).toHaveLength(1);
    expect(errLines[0]).toContain(`cannot reach the Docker daemon at ${dir}/nope.sock`);
  });

  it('rejects a malformed config naming file, line and key', async () => {
    const dir = tempDir();
    const cfg = path.join(dir, 'bad.yaml');
    writeFileSync(cfg, 'outputs:\n  jsonl:\n    paht: /tmp/x\n');
    const run = runCli(['run', '--config', cfg]);
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain(`${cfg}:3:5: outputs.jsonl.paht: unknown key "paht"`);
  });

  it('writes records as JSON lines to stdout and the file, and on SIGTERM drains, flushes and exits 0', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'records.jsonl');
    const cfg = path.join(dir, 'c.yaml');
    writeFileSync(
      cfg,
      `stateDir: ${dir}\noutputs:\n  jsonl: { path: ${file} }\npipeline: { groupWindowSeconds: 0 }\nsensors: { process: { enabled: false }, file: { enabled: false }, network: { enabled: false } }\nmetrics: { enabled: false }\n`,
    );
    const run = runCli(['run', '--config', cfg]);
    onTestFinished(() => {
      run.child.kill('SIGKILL');
    });
    await waitFor(
      () => run.stderr().includes('runwatch running'),
      30_000,
      () => `agent start; stderr: ${run.stderr()}`,
    );
    const id = await runContainer();
    await dockerExec(id, ['echo', 'hello']);
    await waitFor(
      () => run.stdout().includes('"audit.exec"'),
      15_000,
      () => 'an audit.exec record on stdout',
    );
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    const fromFile = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as RunwatchRecord);
    const execs = fromFile.filter((r) => r.rule === 'audit.exec' && r.container?.id === id);
    expect(execs.map((r) => r.docker?.command)).toContain('echo hello');
    const rec = execs[0];
    expect(rec.time).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
    expect(rec.host).toBeTruthy();
    expect(rec.container?.name).toBeTruthy();
    // stdout carries the same records, one JSON object per line.
    const fromStdout = run
      .stdout()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as RunwatchRecord);
    expect(new Set(fromStdout.map((r) => r.id))).toEqual(new Set(fromFile.map((r) => r.id)));
  });

  it('prints its version and help', async () => {
    const v = runCli(['version']);
    expect(await v.exited).toBe(0);
    expect(v.stdout()).toMatch(/^runwatch \d+\.\d+\.\d+/);
    const h = runCli(['run', '--help']);
    expect(await h.exited).toBe(0);
    expect(h.stdout()).toContain('Usage: runwatch run');
  });
});
