import type { DockerActionEvent, HostUser } from '../events/types.js';

/** One run of the `docker` CLI on the host, as the process sensor saw its exec. */
export interface DockerClientRun {
  ts: number;
  pid: number;
  uid: number;
  loginuid?: number;
  user?: string;
  tty?: string;
  args: string[];
}

/** Actions a host user starts through the CLI, with the CLI sub-commands that cause them. */
const CLI_VERBS: Record<string, readonly string[]> = {
  exec_create: ['exec'],
  exec_start: ['exec'],
  attach: ['attach', 'start'],
  'archive-path': ['cp'],
  'extract-to-dir': ['cp'],
  commit: ['commit'],
  export: ['export'],
  kill: ['kill', 'rm'],
  stop: ['stop', 'rm', 'restart'],
  restart: ['restart'],
  pause: ['pause'],
  unpause: ['unpause'],
  rename: ['rename'],
  update: ['update'],
};

/**
 * Recent `docker` CLI runs on the host, so that an audit record of `docker exec` can name the host user
 * (uid, loginuid, tty) behind it. Docker's own events don't say who called the API; the process connector
 * sees the CLI start a moment before the daemon reports the action. Bounded: the last `capacity` runs.
 */
export class DockerClientRuns {
  private readonly runs: DockerClientRun[] = [];

  constructor(
    private readonly capacity = 256,
    private readonly windowMs = 10_000,
  ) {}

  add(run: DockerClientRun): void {
    this.runs.push(run);
    if (this.runs.length > this.capacity) this.runs.shift();
  }

  /** The CLI run behind an admin action: the latest run before it, within the window, with a matching verb that names the container. */
  resolve(ev: DockerActionEvent, containerName: string | undefined): HostUser | undefined {
    const verbs = CLI_VERBS[ev.action];
    if (!verbs || !ev.containerId) return undefined;
    for (let i = this.runs.length - 1; i >= 0; i--) {
      const run = this.runs[i];
      if (run.ts > ev.ts + 1000) continue; // clocks: the CLI's exec is read a little after it happened
      if (ev.ts - run.ts > this.windowMs) break;
      const sub = subcommand(run.args);
      if (!sub || !verbs.includes(sub)) continue;
      if (!run.args.some((a) => namesContainer(a, ev.containerId!, containerName))) continue;
      const user: HostUser = { uid: run.uid, pid: run.pid, command: run.args.join(' ') };
      if (run.loginuid !== undefined) user.loginuid = run.loginuid;
      if (run.user) user.user = run.user;
      if (run.tty) user.tty = run.tty;
      return user;
    }
    return undefined;
  }
}

/** "docker exec …", "docker container exec …" → "exec"; global flags (e.g. -H, --context) are skipped. */
export function subcommand(args: readonly string[]): string | undefined {
  const withValue = new Set(['-H', '--host', '-c', '--context', '--config', '-l', '--log-level']);
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    if (withValue.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    if (a === 'container' || a === 'image') continue;
    return a;
  }
  return undefined;
}

function namesContainer(arg: string, id: string, name: string | undefined): boolean {
  const target = arg.includes(':') && !arg.startsWith('/') ? arg.slice(0, arg.indexOf(':')) : arg; // docker cp NAME:/path
  if (name && target === name) return true;
  return target.length >= 4 && /^[0-9a-f]+$/.test(target) && id.startsWith(target);
}
