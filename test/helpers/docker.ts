import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { onTestFinished } from 'vitest';

const exec = promisify(execFile);

/** Every container a test starts carries this label; leftovers are removed by it before and after a run. */
export const TEST_LABEL = 'runwatch.test';
/** This test run's id: containers are labelled runwatch.test=<run id>, so a run removes only its own afterwards. */
export const TEST_RUN_ID = (process.env.RUNWATCH_TEST_RUN ??= `run-${process.pid}-${Date.now()}`);
export const BUSYBOX_IMAGE = 'runwatch-test/busybox:1';
export const TOOLS_IMAGE = 'runwatch-test/tools:1';

export async function docker(args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  const { stdout } = await exec('docker', args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}

export async function dockerAvailable(): Promise<boolean> {
  try {
    await docker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

export interface RunOptions {
  /** Extra `docker run`/`create` flags (before the image). */
  flags?: string[];
  image?: string;
  cmd?: string[];
  /** `create` instead of `run -d`. */
  createOnly?: boolean;
  /** Keep it after the test (the caller removes it). */
  keep?: boolean;
}

/**
 * Starts a labelled container with no network (`--network none` unless flags say otherwise) and removes
 * it when the test finishes. Returns the full id.
 */
export async function runContainer(opts: RunOptions = {}): Promise<string> {
  const flags = opts.flags ?? [];
  const net = flags.some((f) => f.startsWith('--network')) ? [] : ['--network', 'none'];
  const args = [
    opts.createOnly ? 'create' : 'run',
    ...(opts.createOnly ? [] : ['-d']),
    '--label',
    `${TEST_LABEL}=${TEST_RUN_ID}`,
    ...net,
    ...flags,
    opts.image ?? BUSYBOX_IMAGE,
    ...(opts.cmd ?? ['sleep', '300']),
  ];
  const id = await docker(args);
  if (!opts.keep) onTestFinished(() => removeContainer(id));
  return id;
}

export async function removeContainer(id: string): Promise<void> {
  await docker(['rm', '-f', id]).catch(() => undefined);
}

export async function dockerExec(id: string, cmd: string[], flags: string[] = []): Promise<string> {
  return docker(['exec', ...flags, id, ...cmd]);
}

/** Removes labelled test containers: all of them, or only this run's. */
export async function removeTestContainers(scope: 'all' | 'this-run' = 'all'): Promise<void> {
  const filter = scope === 'all' ? `label=${TEST_LABEL}` : `label=${TEST_LABEL}=${TEST_RUN_ID}`;
  const ids = (await docker(['ps', '-aq', '--filter', filter]).catch(() => '')).split('\n').filter(Boolean);
  if (ids.length) await docker(['rm', '-f', ...ids]).catch(() => undefined);
}
