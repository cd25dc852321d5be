import { dockerAvailable, removeTestContainers } from './docker.js';

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
  // RUNWATCH_TEST_SHARED=1: other test runs share this engine right now; leave their containers alone.
  if (!process.env.RUNWATCH_TEST_SHARED) await removeTestContainers('all');
  return async () => {
    await removeTestContainers('this-run');
  };
}
