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

/** What a CLI command line says: its command ("exec", "cp" …) and the containers it names (as typed: name or id prefix). */
export interface DockerCliCommand {
  command: string;
  containers: string[];
}

/** Global flags of the CLI that take a value ("docker -H unix:///x exec …"). */
const GLOBAL_VALUE_FLAGS = new Set(['-H', '--host', '-c', '--context', '--config', '-l', '--log-level', '--tlscacert', '--tlscert', '--tlskey']);

/**
 * The commands whose Docker action can be attributed, with their flags that take a value (so that a flag's
 * value is not taken for a container) and which positional arguments name containers.
 */
const COMMANDS: Record<string, { valueFlags: readonly string[]; containers: 'first' | 'all' | 'cp' }> = {
  exec: { valueFlags: ['-e', '--env', '--env-file', '-u', '--user', '-w', '--workdir', '--detach-keys'], containers: 'first' },
  attach: { valueFlags: ['--detach-keys'], containers: 'first' },
  start: { valueFlags: ['--detach-keys', '--checkpoint', '--checkpoint-dir'], containers: 'all' },
  cp: { valueFlags: [], containers: 'cp' },
  commit: { valueFlags: ['-a', '--author', '-c', '--change', '-m', '--message'], containers: 'first' },
  export: { valueFlags: ['-o', '--output'], containers: 'first' },
  kill: { valueFlags: ['-s', '--signal'], containers: 'all' },
  rm: { valueFlags: [], containers: 'all' },
  stop: { valueFlags: ['-t', '--time', '-s', '--signal'], containers: 'all' },
  restart: { valueFlags: ['-t', '--time', '-s', '--signal'], containers: 'all' },
  pause: { valueFlags: [], containers: 'all' },
  unpause: { valueFlags: [], containers: 'all' },
  rename: { valueFlags: [], containers: 'first' },
  update: {
    valueFlags: [
      '--blkio-weight',
      '--cpu-period',
      '--cpu-quota',
      '--cpu-rt-period',
      '--cpu-rt-runtime',
      '-c',
      '--cpu-shares',
      '--cpus',
      '--cpuset-cpus',
      '--cpuset-mems',
      '--kernel-memory',
      '-m',
      '--memory',
      '--memory-reservation',
      '--memory-swap',
      '--pids-limit',
      '--restart',
    ],
    containers: 'all',
  },
};

/** Docker actions a host user starts through the CLI, with the CLI commands that cause them. */
const COMMANDS_BY_ACTION: Record<string, readonly string[]> = {
  exec_create: ['exec'],
  exec_start: ['exec'],
  attach: ['attach', 'start'],
  'archive-path': ['cp'],
  'extract-to-dir': ['cp'],
  copy: ['cp'],
  commit: ['commit'],
  export: ['export'],
  kill: ['kill', 'rm'],
  stop: ['stop', 'restart'],
  restart: ['restart'],
  pause: ['pause'],
  unpause: ['unpause'],
  rename: ['rename'],
  update: ['update'],
};

/** A flag whose value is the next argument: "-u" or a short cluster ending in one ("-itu root"); never "--user=x". */
function takesValue(arg: string, valueFlags: ReadonlySet<string>): boolean {
  if (arg.includes('=')) return false;
  if (valueFlags.has(arg)) return true;
  return !arg.startsWith('--') && arg.length > 2 && valueFlags.has(`-${arg[arg.length - 1]}`);
}

/**
 * Parses a `docker` CLI command line (argv[0] included): "docker exec …", "docker container exec …", with
 * global flags skipped. Undefined for commands that cause no attributable action (ps, logs, run …).
 */
export function parseDockerCli(args: readonly string[]): DockerCliCommand | undefined {
  let i = 1;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === 'container') continue;
    if (!a.startsWith('-')) break;
    if (takesValue(a, GLOBAL_VALUE_FLAGS)) i++;
  }
  const command = args[i];
  const spec = command === undefined ? undefined : COMMANDS[command];
  if (!spec) return undefined;
  const valueFlags = new Set(spec.valueFlags);
  const positional: string[] = [];
  for (i++; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith('-') && a !== '-') {
      if (takesValue(a, valueFlags)) i++;
      continue;
    }
    positional.push(a);
    // What follows the container of "exec"/"top"-like commands is the command run inside, flags and all.
    if (spec.containers === 'first') break;
  }
  let containers: string[];
  switch (spec.containers) {
    case 'first':
      containers = positional.slice(0, 1);
      break;
    case 'all':
      containers = positional;
      break;
    case 'cp':
      // docker cp NAME:/path ./local, or the other way round; a local path starts with "/" or "." or has no colon.
      containers = positional.filter((p) => !p.startsWith('/') && !p.startsWith('.') && p.includes(':')).map((p) => p.slice(0, p.indexOf(':')));
      break;
  }
  return { command, containers };
}

/** A container as the CLI names it: its name, or a prefix of its id (at least 4 hex digits, fewer is too easily a coincidence). */
export function namesContainer(typed: string, id: string, name: string | undefined): boolean {
  const t = typed.startsWith('/') ? typed.slice(1) : typed;
  if (name && t === name) return true;
  return t.length >= 4 && /^[0-9a-f]+$/.test(t) && id.startsWith(t);
}

interface ParsedRun extends DockerClientRun {
  cli: DockerCliCommand;
}

export interface DockerClientRunsOptions {
  /** Runs kept, newest last. */
  capacity?: number;
  /** How long before a Docker action its CLI run may have started. */
  windowMs?: number;
  /** How far after the action a run may be timestamped and still match (clock skew between the kernel and dockerd). */
  skewMs?: number;
}

/**
 * Recent `docker` CLI runs on the host, so that an audit record of `docker exec` can name the host user
 * (uid, loginuid, tty) behind it. Docker's own events don't say who called the API; the process connector
 * sees the CLI start a moment before the daemon reports the action. Only runs of commands that cause an
 * audited action are kept (a monitoring script's `docker ps` loop must not push them out). Bounded.
 */
export class DockerClientRuns {
  private readonly runs: ParsedRun[] = [];
  private readonly capacity: number;
  private readonly windowMs: number;
  private readonly skewMs: number;

  constructor(opts: DockerClientRunsOptions = {}) {
    this.capacity = opts.capacity ?? 256;
    this.windowMs = opts.windowMs ?? 10_000;
    this.skewMs = opts.skewMs ?? 1000;
  }

  /** Keeps the run if its command can cause an attributable action; returns whether it was kept. */
  add(run: DockerClientRun): boolean {
    const cli = parseDockerCli(run.args);
    if (!cli || cli.containers.length === 0) return false;
    this.runs.push({ ...run, cli });
    if (this.runs.length > this.capacity) this.runs.shift();
    return true;
  }

  /**
   * The CLI run behind an admin action: the latest run, started within the window before it, of a command
   * that causes this action and names this container. A run started after the action is taken only when no
   * earlier one matches (clock skew).
   */
  resolve(ev: DockerActionEvent, containerName: string | undefined): HostUser | undefined {
    const commands = COMMANDS_BY_ACTION[ev.action];
    const id = ev.containerId;
    if (!commands || !id) return undefined;
    let late: ParsedRun | undefined;
    for (let i = this.runs.length - 1; i >= 0; i--) {
      const run = this.runs[i];
      if (run.ts > ev.ts + this.skewMs) continue;
      if (ev.ts - run.ts > this.windowMs) break;
      if (!commands.includes(run.cli.command) || !run.cli.containers.some((c) => namesContainer(c, id, containerName))) continue;
      if (run.ts <= ev.ts) return hostUser(run);
      late = run; // older is closer to the action
    }
    return late && hostUser(late);
  }
}

function hostUser(run: DockerClientRun): HostUser {
  const user: HostUser = { uid: run.uid, pid: run.pid, command: redactedCommandLine(run.args) };
  if (run.loginuid !== undefined) user.loginuid = run.loginuid;
  if (run.user) user.user = run.user;
  if (run.tty) user.tty = run.tty;
  return user;
}

/** The command line with environment values masked ("-e DB_PASSWORD=***"): records must not carry secrets. */
export function redactedCommandLine(args: readonly string[]): string {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const attached = /^(-e|--env)(=?)(.+)$/.exec(a);
    if ((a === '--env' || /^-[a-zA-Z]*e$/.test(a)) && i + 1 < args.length) out.push(a, maskEnv(args[++i]));
    else if (attached && !a.startsWith('--env-file')) out.push(`${attached[1]}${attached[2]}${maskEnv(attached[3])}`);
    else out.push(a);
  }
  return out.join(' ');
}

function maskEnv(assignment: string): string {
  const eq = assignment.indexOf('=');
  return eq < 0 ? assignment : `${assignment.slice(0, eq)}=***`;
}
