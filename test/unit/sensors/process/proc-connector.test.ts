import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  loadProcConnector,
  ProcConnector,
  type ConnectorEvent,
  type ConnectorExecEvent,
  type ConnectorExitEvent,
  type ConnectorForkEvent,
} from '../../../../agent/sensors/process/proc-connector.js';
import { docker, dockerAvailable, dockerExec, runContainer, TEST_LABEL, TEST_RUN_ID, TOOLS_IMAGE } from '../../../helpers/docker.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const ADDON = path.join(ROOT, 'build/Release/proc_connector.node');

const load = loadProcConnector();
const isRoot = process.getuid?.() === 0;
const canRun = load.available && isRoot;
const hasDocker = canRun && (await dockerAvailable());

const fdCount = (): number => readdirSync('/proc/self/fd').length;
/** Open descriptors but /proc/<pid> directories: while running, the readers hold one per exec they read until it is handed over. */
const fdCountButProcDirs = (): number =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return !/^\/proc\/\d+$/.test(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      return false; // closed meanwhile
    }
  }).length;
const threadCount = (): number => readdirSync('/proc/self/task').length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Starts a connector that records every event; stops it when the test ends. */
function record(opts: ConstructorParameters<typeof ProcConnector>[0] = {}) {
  const events: ConnectorEvent[] = [];
  const batches: number[] = [];
  const pc = new ProcConnector(opts, (batch) => {
    batches.push(batch.length);
    for (const e of batch) events.push(e);
  });
  pc.start();
  onTestFinished(() => pc.stop());
  const waitFor = async (pred: () => boolean, timeoutMs = 10_000): Promise<void> => {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end) throw new Error('timed out waiting for proc connector events');
      await sleep(20);
    }
  };
  const execs = (pid: number) => events.filter((e): e is ConnectorExecEvent => e.type === 'exec' && e.pid === pid);
  return { pc, events, batches, waitFor, execs };
}

/** Runs a node ESM snippet against the addon in a child process. */
async function child(code: string, wrap: string[] = [], timeoutMs = 10_000) {
  const script = `import { createRequire } from 'node:module';\nconst { ProcConnector } = createRequire(import.meta.url)(${JSON.stringify(ADDON)});\n${code}`;
  return new Promise<{ code: number | null; stdout: string; stderr: string; ms: number }>((resolve) => {
    const t0 = Date.now();
    const argv = [...wrap, process.execPath, '--input-type=module', '-e', script];
    const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

describe('proc connector addon', () => {
  it.runIf(process.platform === 'linux')('is built and loadable', () => {
    expect(load).toEqual({ available: true });
  });

  it.runIf(canRun)('reports exec, fork and exit of spawned processes', { timeout: 60_000 }, async () => {
    await readFile('/proc/self/stat'); // start libuv's thread pool before counting threads
    const fds0 = fdCount();
    const running0 = fdCountButProcDirs();
    const threads0 = threadCount();

    const { pc, events, batches, waitFor, execs } = record({ batchMax: 64 });
    // The reader, and a thread with its own exec socket per CPU this process may run on.
    const cpus = availableParallelism();
    expect(pc.stats().perCpuReaders).toBe(cpus);
    expect(threadCount()).toBe(threads0 + 1 + cpus);
    expect(fdCountButProcDirs()).toBe(running0 + 3 + cpus); // the exec and the rest netlink sockets + eventfd, and the per-CPU sockets

    const N = 300;
    const pids: number[] = [];
    for (let i = 0; i < N; i += 10) {
      await Promise.all(
        Array.from({ length: Math.min(10, N - i) }, (_, j) => {
          const p = execFile('/usr/bin/true', ['rw-test', String(i + j)]);
          pids.push(p.pid!);
          return new Promise((r) => p.on('close', r));
        }),
      );
    }
    const exited = (pid: number) => events.some((e) => e.type === 'exit' && e.pid === pid);
    await waitFor(() => pids.every((pid) => execs(pid).length > 0 && exited(pid)));

    const execEvents = pids.map((pid) => execs(pid)[0]);
    const resolved = execEvents.filter((e) => e.resolved);
    // /usr/bin/true often exits before its /proc entry is read (more so on a
    // loaded machine without SCHED_FIFO): this checks function, not quality.
    expect(resolved.length).toBeGreaterThanOrEqual(N * 0.5);
    for (const e of resolved) {
      expect(e.exe).toBe('/usr/bin/true');
      expect(e.exeDeleted).toBe(false);
      // A host process other than the docker CLI: only what ancestry needs is read.
      expect(e.args).toEqual([]);
      expect(e.cwd).toBeUndefined();
      expect(e.comm).toBe('true');
      expect(e.uid).toBe(0);
      expect(e.containerId).toBe('');
    }
    for (const e of execEvents) {
      expect(e.ppid).toBe(process.pid);
      expect(e.ts).toBeGreaterThan(Date.now() - 120_000);
      expect(e.ts).toBeLessThanOrEqual(Date.now() + 1000);
    }
    // Every spawned pid was forked by us, before its exec.
    for (const pid of pids) {
      const fork = events.find((e): e is ConnectorForkEvent => e.type === 'fork' && e.childPid === pid);
      expect(fork?.parentPid).toBe(process.pid);
      expect(events.indexOf(fork!)).toBeLessThan(events.indexOf(execs(pid)[0]));
    }
    const exits = events.filter((e): e is ConnectorExitEvent => e.type === 'exit' && pids.includes(e.pid));
    expect(exits.every((e) => e.exitCode === 0 && e.signal === undefined)).toBe(true);

    const s = pc.stats();
    expect(s.received).toBeGreaterThanOrEqual(3 * N);
    expect(s.delivered + s.queueDrops + s.queued).toBe(s.received);
    expect(s.delivered).toBe(events.length);
    expect(s.queueDrops).toBe(0);
    expect(s.kernelLost).toBe(0);
    expect(s.enobufs).toBe(0);
    expect(s.rcvbufBytes).toBeGreaterThanOrEqual(8 * 1024 * 1024);
    expect(typeof s.schedFifo).toBe('boolean');
    expect(s.unresolved).toBeGreaterThanOrEqual(N - resolved.length);
    expect(Math.max(...batches)).toBeLessThanOrEqual(64);

    pc.stop();
    pc.stop(); // idempotent
    expect(threadCount()).toBeLessThanOrEqual(threads0); // other threads of the process may end meanwhile; a leak would add one
    expect(fdCount()).toBe(fds0);
    const after = events.length;
    await run('/usr/bin/true');
    await sleep(100);
    expect(events.length).toBe(after);
  });

  it.runIf(canRun)('decodes exit codes and signals', { timeout: 30_000 }, async () => {
    const { events, waitFor } = record();
    const a = spawn('/bin/sh', ['-c', 'exit 7']);
    await new Promise((r) => a.on('close', r));
    const b = spawn('/usr/bin/sleep', ['30']);
    await sleep(100);
    b.kill('SIGKILL');
    await new Promise((r) => b.on('close', r));
    const exitOf = (pid: number) => events.find((e): e is ConnectorExitEvent => e.type === 'exit' && e.pid === pid);
    await waitFor(() => [a, b].every((p) => exitOf(p.pid!)));
    expect(exitOf(a.pid!)).toMatchObject({ exitCode: 7 });
    expect(exitOf(a.pid!)?.signal).toBeUndefined();
    expect(exitOf(b.pid!)).toMatchObject({ exitCode: 128 + 9, signal: 9 });
  });

  it.runIf(canRun && isRoot)('tracks the real uid from the event stream across setuid and fork', { timeout: 30_000 }, async () => {
    const { events, waitFor, execs } = record();
    // Node's child: forked as root, setuid(1000) (a uid event), then exec; its sh forks id, which inherits 1000.
    const p = spawn('/bin/sh', ['-c', '/usr/bin/id -u; /usr/bin/sleep 0.2'], { uid: 1000, gid: 1000 });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => p.on('close', r));
    expect(out.trim()).toBe('1000');
    await waitFor(() => execs(p.pid!).length > 0);
    expect(execs(p.pid!)[0].uid).toBe(1000);
    const children = () => events.filter((e): e is ConnectorExecEvent => e.type === 'exec' && e.ppid === p.pid);
    await waitFor(() => children().length >= 2);
    for (const e of children()) expect(e.uid).toBe(1000);
  });
  it.runIf(canRun)('can be stopped from inside its callback', { timeout: 20_000 }, async () => {
    const threads0 = threadCount();
    let calls = 0;
    const pc: ProcConnector = new ProcConnector({}, () => {
      calls++;
      pc.stop();
    });
    pc.start();
    await run('/usr/bin/true');
    const end = Date.now() + 5000;
    while (calls === 0 && Date.now() < end) await sleep(10);
    expect(calls).toBe(1);
    await run('/usr/bin/true');
    await sleep(100);
    expect(calls).toBe(1);
    expect(threadCount()).toBeLessThanOrEqual(threads0); // other threads of the process may end meanwhile; a leak would add one
  });

  it.runIf(canRun)('does not leak threads or descriptors over start/stop cycles', () => {
    const fds0 = fdCount();
    const threads0 = threadCount();
    const pc = new ProcConnector({ rcvbufBytes: 1 << 20 }, () => {});
    for (let i = 0; i < 50; i++) {
      pc.start();
      pc.stop();
    }
    expect(fdCount()).toBe(fds0);
    expect(threadCount()).toBeLessThanOrEqual(threads0); // other threads of the process may end meanwhile; a leak would add one
  });

  it.runIf(canRun)('reads short-lived execs on the CPU each ran on, before the program exits', { timeout: 60_000 }, async () => {
    const cpus = availableParallelism();
    const { pc, events, waitFor } = record();
    // A shell runs /usr/bin/true through taskset on every CPU in turn. The shell, not this process, forks them:
    // while this process forks, its own threads (the readers) wait for its memory map, which an agent never does.
    const N = 400;
    const { stdout } = await run('sh', ['-c', `i=0; while [ $i -lt ${N} ]; do taskset -c $((i % ${cpus})) /usr/bin/true; i=$((i+1)); done; echo $$`]);
    const shell = Number(stdout.trim());
    const last = new Map<number, ConnectorExecEvent>();
    const trueExecs = () => {
      for (const e of events) if (e.type === 'exec' && e.ppid === shell && (e.exe === '/usr/bin/true' || e.comm === 'true')) last.set(e.pid, e);
      return last;
    };
    await waitFor(() => trueExecs().size >= N);
    const resolved = [...trueExecs().values()].filter((e) => e.resolved && e.exe === '/usr/bin/true').length;
    // One reader woken on another, idle CPU lost this race for 1-15% of such execs on this VM; the per-CPU readers
    // preempt the program on its own CPU. Without SCHED_FIFO they cannot: then this checks function only.
    expect(resolved).toBeGreaterThanOrEqual(pc.stats().schedFifo ? N * 0.99 : N * 0.5);
  });

  it.runIf(canRun)('runs one reader thread when per-CPU readers are off', () => {
    const threads0 = threadCount();
    const running0 = fdCountButProcDirs();
    const { pc } = record({ perCpuReaders: false });
    expect(pc.stats().perCpuReaders).toBe(0);
    expect(threadCount()).toBe(threads0 + 1);
    expect(fdCountButProcDirs()).toBe(running0 + 3);
  });

  it.runIf(canRun)('rejects a second start and can start again after stop', () => {
    const { pc } = record();
    expect(() => pc.start()).toThrow(/already started/);
    pc.stop();
    pc.start();
    expect(pc.stats().rcvbufBytes).toBeGreaterThan(0);
    pc.stop();
  });

  it.runIf(canRun)('lets the process exit after stop(), keeps it alive while running', { timeout: 30_000 }, async () => {
    const stopped = await child(
      `const pc = new ProcConnector({}, () => {}); pc.start(); setTimeout(() => { pc.stop(); console.log(JSON.stringify(pc.stats())); }, 300);`,
    );
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(5000);
    expect(JSON.parse(stopped.stdout)).toMatchObject({ queueDrops: 0, kernelLost: 0 });

    const running = await child(`const pc = new ProcConnector({}, () => {}); pc.start(); console.log('started');`, [], 1500);
    expect(running.stdout.trim()).toBe('started');
    expect(running.code).toBeNull(); // killed by our timeout: the subscription kept the loop alive
  });

  it.runIf(canRun && existsSync('/usr/bin/unshare'))('explains why it cannot subscribe outside the host namespaces', { timeout: 30_000 }, async () => {
    const probe = `try { new ProcConnector({}, () => {}).start(); console.log('started'); process.exit(0); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const netns = await child(probe, ['unshare', '--net']);
    expect(JSON.parse(netns.stdout)).toMatchObject({
      code: 'ECONNREFUSED',
      message: expect.stringMatching(/network namespace/),
    });
    const pidns = await child(probe, ['unshare', '--pid', '--fork', '--mount-proc']);
    expect(JSON.parse(pidns.stdout)).toMatchObject({ code: 'ETIMEDOUT', message: expect.stringMatching(/pid/) });
  });

  it.runIf(canRun)('validates options', () => {
    expect(() => new ProcConnector({ queueCapacity: 0 }, () => {})).toThrow(RangeError);
    expect(() => new ProcConnector({ batchMax: 1.5 }, () => {})).toThrow(RangeError);
  });
});

describe.runIf(hasDocker)('proc connector with Docker containers', () => {
  it('reads cwd, args, stdio sockets and deleted executables of container processes', { timeout: 60_000 }, async () => {
    const { events, waitFor } = record();
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    // sleep 0.31 has /dev/null and a pipe; nc -e runs sleep 0.32 on the accepted socket (a reverse shell's
    // shape); the last exec runs a binary deleted after it was opened, through its fd.
    const script = [
      '/usr/bin/sleep 0.31 </dev/null',
      // The client retries until the listener is up (a loaded machine may take a while to start it).
      'nc -l -p 4444 -e /usr/bin/sleep 0.32 & i=0; until nc 127.0.0.1 4444 </dev/null 2>/dev/null || [ $i -ge 100 ]; do i=$((i+1)); /usr/bin/sleep 0.05; done; wait',
      'cp /usr/bin/sleep /tmp/gone && exec 3</tmp/gone && rm /tmp/gone && exec /proc/self/fd/3 0.33',
    ].join('; ');
    await dockerExec(id, ['/bin/sh', '-c', script], ['-w', '/tmp']);
    // The program run with `arg` last (nc's own exec has it last too, but is busybox).
    const execOf = (arg: string) =>
      events.find((e): e is ConnectorExecEvent => e.type === 'exec' && e.containerId === id && e.exe !== '/bin/busybox' && e.args[e.args.length - 1] === arg);
    await waitFor(() => ['0.31', '0.32', '0.33'].every((a) => execOf(a)));
    expect(execOf('0.31')).toMatchObject({ exe: '/usr/bin/sleep', args: ['/usr/bin/sleep', '0.31'], cwd: '/tmp', stdioSocket: false, tty: 0, resolved: true });
    expect(execOf('0.32')).toMatchObject({ exe: '/usr/bin/sleep', stdioSocket: true });
    expect(execOf('0.33')).toMatchObject({ exe: '/tmp/gone', exeDeleted: true, args: ['/proc/self/fd/3', '0.33'], resolved: true });
  });

  it('attributes docker exec and docker run processes to their container', { timeout: 90_000 }, async () => {
    const { events, waitFor } = record();
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    await dockerExec(id, ['/usr/bin/id', '-u'], ['-w', '/tmp']);
    const inContainer =
      (exe: string, cid: string) =>
      (e: ConnectorEvent): e is ConnectorExecEvent =>
        e.type === 'exec' && e.exe === exe && e.containerId === cid;
    await waitFor(() => events.some(inContainer('/usr/bin/id', id)));
    const idExec = events.find(inContainer('/usr/bin/id', id))!;
    expect(idExec).toMatchObject({ resolved: true, args: ['/usr/bin/id', '-u'], comm: 'id', cwd: '/tmp', uid: 0 });
    // The container's pid 1, exec'd by runc, is attributed too.
    expect(events.some(inContainer('/usr/bin/sleep', id))).toBe(true);
    // docker run --rm: the id is only known from --cidfile.
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-pc-'));
    const cidfile = path.join(dir, 'cid');
    await docker(['run', '--rm', '--cidfile', cidfile, '--network', 'none', '--label', `${TEST_LABEL}=${TEST_RUN_ID}`, TOOLS_IMAGE, '/usr/bin/true', 'run-rm']);
    const rmId = readFileSync(cidfile, 'utf8').trim();
    rmSync(dir, { recursive: true, force: true });
    await waitFor(() => events.some(inContainer('/usr/bin/true', rmId)));
    expect(events.find(inContainer('/usr/bin/true', rmId))).toMatchObject({ args: ['/usr/bin/true', 'run-rm'] });
    // Host-side processes (docker CLI, runc) are not attributed to the container.
    expect(events.some((e) => e.type === 'exec' && e.pid === process.pid)).toBe(false);
    const dockerCli = events.find((e): e is ConnectorExecEvent => e.type === 'exec' && e.comm === 'docker');
    expect(dockerCli?.containerId).toBe('');
  });
});
