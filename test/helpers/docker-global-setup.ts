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
  await removeTestContainers();
  return async () => {
    await removeTestContainers();
  };
}
