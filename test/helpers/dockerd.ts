import { execFileSync, spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { docker } from './docker.js';
import { waitFor } from './test-agent.js';

function dockerdPid(): number | undefined {
  try {
    const out = execFileSync('pidof', ['dockerd'], { encoding: 'utf8' }).trim();
    return out ? Number(out.split(/\s+/)[0]) : undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Restarts the real dockerd with the command line it runs with now (SIGTERM, wait, start again),
 * as a daemon restart looks to the agent. Containers without a restart policy stop.
 */
export async function restartDockerd(): Promise<void> {
  const pid = dockerdPid();
  if (!pid) throw new Error('dockerd is not running');
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  process.kill(pid, 'SIGTERM');
  await waitFor(
    () => !alive(pid),
    60_000,
    () => 'dockerd to exit',
  );
  const log = openSync('/var/log/runwatch-dockerd.log', 'a');
  spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', log, log] }).unref();
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await docker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 5000 });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}
