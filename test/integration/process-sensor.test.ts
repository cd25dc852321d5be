import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { docker, dockerExec, runContainer, TOOLS_IMAGE } from '../helpers/docker.js';
import { startTestAgent, waitFor } from '../helpers/test-agent.js';

const RULES = path.resolve('test/fixtures/rules/process');

function processAgent(extra: Record<string, unknown> = {}) {
  return startTestAgent({ rules: { paths: [RULES] }, sensors: { process: { enabled: true, ...extra } } });
}

describe('process sensor (real kernel events, real containers)', () => {
  it('gives no alert for the allowed entrypoint, and process.not_allowed with exe, args and parent for a docker exec of another binary', async () => {
    const t = await processAgent();
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    await dockerExec(id, ['/bin/sh', '-c', '/usr/bin/whoami; /usr/bin/true']);
    const rec = await t.waitForRecord((r) => r.rule === 'process.not_allowed' && r.container?.id === id && r.process?.exe === '/usr/bin/whoami');
    expect(rec.process?.args).toEqual(['/usr/bin/whoami']);
    expect(rec.process?.ancestors[0]).toMatchObject({ exe: '/bin/busybox', comm: 'sh' });
    expect(rec.process?.ppid).toBe(rec.process?.ancestors[0].pid);
    expect(rec.process?.user).toBe('root');
    expect(rec.profile).toBe('tools-process-test');
    expect(rec.allowHint).toContain('/usr/bin/whoami');
    expect(rec.container?.image).toBe(TOOLS_IMAGE);
    // The allowed ones gave nothing.
    const flagged = t.records.filter((r) => r.rule === 'process.not_allowed' && r.container?.id === id).map((r) => r.process?.exe);
    expect(flagged).not.toContain('/usr/bin/sleep');
    expect(flagged).not.toContain('/usr/bin/true');
  });

  it('reports process.drift for a binary copied into the container and run', async () => {
    const t = await processAgent();
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    // The copy is of sleep, so that it lives long enough to be read on a loaded machine: an exec that exits
    // before its executable is read is unresolved (a documented limit, tested on its own), not drift.
    await dockerExec(id, ['/bin/sh', '-c', '/usr/bin/sleep 0.1; cp /usr/bin/sleep /tmp/dropped && chmod +x /tmp/dropped && /tmp/dropped 0.2']);
    const rec = await t.waitForRecord((r) => r.rule === 'process.drift' && r.container?.id === id);
    expect(rec.process?.exe).toBe('/tmp/dropped');
    expect(rec.severity).toBe('high');
    // /usr/bin/sleep from the image, run just before, is not drift.
    expect(t.records.some((r) => r.rule === 'process.drift' && r.process?.exe === '/usr/bin/sleep')).toBe(false);
  });

  it('names the host user behind docker exec in the audit record', async () => {
    const t = await processAgent();
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    await dockerExec(id, ['/usr/bin/id']);
    const rec = await t.waitForRecord((r) => r.rule === 'audit.exec' && r.docker?.action === 'exec_start' && r.container?.id === id);
    expect(rec.docker?.hostUser).toMatchObject({ uid: process.getuid!() });
    expect(rec.docker?.hostUser?.command).toContain(`exec ${id} /usr/bin/id`);
    expect(rec.message).toContain('host user');
  });

  it('survives an exec storm in a container and accounts for every exec', async () => {
    const t = await processAgent();
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    const n = 2000;
    await dockerExec(id, ['/bin/sh', '-c', `i=0; while [ $i -lt ${n} ]; do /usr/bin/true; i=$((i+1)); done`]);
    const health = () =>
      (t.agent.health() as { sensors: { process: { state: string; details: { containerExecs: number; kernelLost: number; queueDrops: number } } } }).sensors
        .process;
    // Every exec of the storm is either seen or counted as lost.
    await waitFor(
      () => health().details.containerExecs + health().details.kernelLost + health().details.queueDrops >= n,
      30_000,
      () => `execs accounted: ${JSON.stringify(health().details)}`,
    );
    expect(health().state).toBe('running');
    const lost = health().details.kernelLost + health().details.queueDrops;
    if (lost > 0) await t.waitForRecord((r) => r.rule === 'sensor.events_lost', 10_000);
    // Still working after the storm.
    await dockerExec(id, ['/usr/bin/whoami']);
    await waitFor(
      () => t.records.find((r) => r.rule === 'process.not_allowed' && r.process?.exe === '/usr/bin/whoami' && r.container?.id === id),
      15_000,
      () =>
        `process.not_allowed for whoami; container in the inventory: ${t.agent.inventory.get(id) !== undefined}; process sensor: ${JSON.stringify(health().details)}`,
    );
  });

  it("names users from the container's own /etc/passwd, and neither follows a link out of it nor blocks on a FIFO there", async () => {
    const hostDir = mkdtempSync(path.join(tmpdir(), 'rw-passwd-'));
    onTestFinished(() => rmSync(hostDir, { recursive: true, force: true }));
    writeFileSync(path.join(hostDir, 'passwd'), 'planted:x:0:0::/:/bin/sh\n');
    // The containers change /etc/passwd themselves and then keep running head: a `docker exec` would block
    // in runc's own user lookup on the FIFO.
    const looping = (prepare: string) =>
      runContainer({ image: TOOLS_IMAGE, cmd: ['/bin/sh', '-c', `${prepare}while :; do /usr/bin/head -c 0 /dev/null; /usr/bin/sleep 0.2; done`] });
    const plain = await looping('');
    const linked = await looping(`rm /etc/passwd && ln -s ${hostDir}/passwd /etc/passwd && `);
    const fifo = await looping('rm /etc/passwd && busybox mkfifo /etc/passwd && ');
    const mergedDir = async (id: string) => docker(['inspect', '-f', '{{.GraphDriver.Data.MergedDir}}', id]);
    const fifoPasswd = path.join(await mergedDir(fifo), 'etc/passwd');
    const linkedPasswd = path.join(await mergedDir(linked), 'etc/passwd');
    await waitFor(
      () => lstatSync(fifoPasswd, { throwIfNoEntry: false })?.isFIFO() && lstatSync(linkedPasswd, { throwIfNoEntry: false })?.isSymbolicLink(),
      10_000,
      () => 'the containers to change /etc/passwd',
    );
    // Started after the changes, so the first read of each container's /etc/passwd is of the changed file.
    const t = await processAgent();
    // head is not allowed (so each run gives a record) and reads no user database itself.
    const recordFor = (id: string) => t.waitForRecord((r) => r.rule === 'process.not_allowed' && r.container?.id === id && r.process?.exe === '/usr/bin/head');
    expect((await recordFor(plain)).process?.user).toBe('root');
    expect((await recordFor(linked)).process?.user).toBeUndefined();
    expect((await recordFor(fifo)).process?.user).toBeUndefined();
  });

  it('leaves no thread or netlink socket behind when the agent stops', async () => {
    const threads = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
    const netlinkFds = () =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:');
        } catch {
          return false;
        }
      }).length;
    const before = { threads: threads(), sockets: netlinkFds() };
    const t = await processAgent();
    expect(threads()).toBeGreaterThan(before.threads);
    await t.stop();
    await waitFor(
      () => threads() <= before.threads && netlinkFds() <= before.sockets,
      5000,
      () => `threads ${threads()} (before ${before.threads}), sockets ${netlinkFds()} (before ${before.sockets})`,
    );
  });
});

describe('process sensor fallback', () => {
  it('scans /proc when told to, and says coverage is partial', async () => {
    const t = await processAgent({ source: 'procfs', procfsIntervalMs: 100 });
    const h = (t.agent.health() as { sensors: { process: { state: string; lastError?: string; details: { coverage: string; source: string } } } }).sensors
      .process;
    expect(h.details).toMatchObject({ source: 'procfs', coverage: 'partial' });
    expect(h.state).toBe('degraded');
    // A process that lives long enough for a scan is seen and checked like any other.
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    await docker(['exec', '-d', id, '/bin/sh', '-c', '/usr/bin/sleep 30 | /usr/bin/head -n 1']);
    const rec = await t.waitForRecord((r) => r.rule === 'process.not_allowed' && r.container?.id === id && r.process?.exe === '/usr/bin/head');
    expect(rec.process?.args).toEqual(['/usr/bin/head', '-n', '1']);
  });
});
