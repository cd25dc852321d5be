import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { dockerAvailable, removeTestContainers } from './docker.js';

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/** Tests that run the `runwatch` CLI as a real process need dist/ to match the sources. */
function ensureBuilt(): void {
  const cli = path.resolve('dist/agent/cli/index.js');
  const built = statSync(cli, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  if (built >= newestMtime(path.resolve('agent'))) return;
  try {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'pipe' });
  } catch {
    // tsc still emits on type errors; `npm run typecheck` is where they fail the build.
    process.stderr.write('warning: tsc reported type errors while building dist/ for the CLI tests\n');
  }
}

/**
 * Integration tests need the real engine. With CI set they fail when it is missing (never skip);
 * `bash scripts/setup-host.sh` installs and starts it.
 */
export default async function setup(): Promise<() => Promise<void>> {
  if (!(await dockerAvailable())) {
    const msg = 'Docker engine not reachable: run `bash scripts/setup-host.sh` (as root) first';
    if (process.env.CI) throw new Error(msg);
    process.stderr.write(`warning: ${msg}; integration tests will fail\n`);
  }
  ensureBuilt();
  // RUNWATCH_TEST_SHARED=1: other test runs share this engine right now; leave their containers alone.
  if (!process.env.RUNWATCH_TEST_SHARED) await removeTestContainers('all');
  return async () => {
    await removeTestContainers('this-run');
  };
}
