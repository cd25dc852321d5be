import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import type { FileChangeEvent, RunwatchRecord } from '../../agent/events/types.js';
import { createLogger, silentLogger } from '../../agent/log.js';
import { Agent } from '../../agent/main.js';
import { processInotifyWatches } from '../../agent/sensors/file/inotify-stats.js';
import { isInUpperLayer } from '../../agent/sensors/file/upper-layer.js';
import { docker, dockerExec, runContainer, TOOLS_IMAGE } from '../helpers/docker.js';
import { deepMerge, MemorySink, waitFor, type TestAgent } from '../helpers/test-agent.js';

const PROFILE = `apiVersion: runwatch/v1
kind: ImageProfile
name: file-sensor-test
images: ["runwatch-test/busybox:1"]
mode: monitor
process:
  allow: ["/bin/busybox"]
files:
  write: ["/tmp/**"]
`;

interface FileAgent extends TestAgent {
  /** Every file_change event the sensors queued, as produced (the pipeline enriches the same objects later). */
  events: FileChangeEvent[];
  waitForEvent(pred: (e: FileChangeEvent) => boolean, what: string): Promise<FileChangeEvent>;
}

/**
 * The real agent (as startTestAgent builds it) with the file sensor on and the rules engine loading a
 * profile that allows /tmp/** writes. Raw events are read from the queue's push (spied before start, so
 * the first scan's events count too); records come from the real engine.
 */
async function startFileAgent(overrides: Record<string, unknown> = {}): Promise<FileAgent> {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'rw-file-test-'));
  writeFileSync(path.join(stateDir, 'busybox.yaml'), PROFILE);
  const base = {
    stateDir,
    outputs: { stdout: { enabled: false }, jsonl: { path: path.join(stateDir, 'records.jsonl') } },
    pipeline: { groupWindowSeconds: 0 },
    rules: { watch: false, paths: [path.join(stateDir, 'busybox.yaml')] },
    sensors: { process: { enabled: false }, file: { enabled: true }, network: { enabled: false } },
    metrics: { enabled: false },
  };
  const config = parseConfig(JSON.stringify(deepMerge(base, overrides)), path.join(stateDir, 'config.yaml'));
  const sink = new MemorySink();
  const agent = new Agent({ config, log: process.env.RUNWATCH_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger, extraSinks: [sink] });
  const push = vi.spyOn(agent.queue, 'push');
  const events: FileChangeEvent[] = [];
  const fileEvents = () => {
    for (const [ev] of push.mock.calls.splice(0)) if (ev.kind === 'file_change') events.push(ev);
    return events;
  };
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await agent.stop();
    rmSync(stateDir, { recursive: true, force: true });
  };
  onTestFinished(stop);
  await agent.start();
  return {
    agent,
    config,
    sink,
    records: sink.records,
    stateDir,
    stop,
    waitForRecord: (pred, timeoutMs = 15_000) =>
      waitFor(
        () => sink.records.find(pred),
        timeoutMs,
        () => `a matching record; got rules: ${sink.records.map((r) => r.rule).join(', ') || 'none'}`,
      ),
    get events() {
      return fileEvents();
    },
    waitForEvent: (pred, what) =>
      waitFor(
        () => fileEvents().find(pred),
        15_000,
        () => `${what}; got ${events.map((e) => `${e.op} ${e.path}`).join(', ') || 'no file events'}`,
      ),
  };
}

const of = (id: string, op: FileChangeEvent['op'], p: string) => (e: FileChangeEvent) => e.containerId === id && e.op === op && e.path === p;

/** Inode numbers of every directory the kernel watches for this process. */
const kernelWatchedInodes = () => new Set(processInotifyWatches());

function dirInodes(root: string): number[] {
  const out = [statSync(root).ino];
  for (const d of readdirSync(root, { withFileTypes: true, recursive: true })) if (d.isDirectory()) out.push(statSync(path.join(d.parentPath, d.name)).ino);
  return out;
}

describe('file sensor (real containers, overlay upper layer)', () => {
  it('reports create, modify, delete (whiteout) and chmod as paths inside the container', async () => {
    const t = await startFileAgent({ sensors: { file: { ignore: ['/proc/**', '/var/noise/**'] } } });
    const id = await runContainer();

    await dockerExec(id, ['sh', '-c', 'echo ok > /tmp/allowed']);
    expect(await t.waitForEvent(of(id, 'create', '/tmp/allowed'), 'create /tmp/allowed')).toMatchObject({ pathPrefix: '/tmp' });

    await dockerExec(id, ['sh', '-c', 'echo new > /etc/new-file']);
    const created = await t.waitForEvent(of(id, 'create', '/etc/new-file'), 'create /etc/new-file');
    expect(created.mode! & 0o170000).toBe(0o100000);
    expect(created.discovered).toBeUndefined();

    await dockerExec(id, ['sh', '-c', 'echo more >> /etc/runwatch-image-file']);
    await t.waitForEvent(of(id, 'modify', '/etc/runwatch-image-file'), 'modify of the image file');
    expect(t.events.some(of(id, 'create', '/etc/runwatch-image-file'))).toBe(false);

    await dockerExec(id, ['rm', '/etc/runwatch-image-file']);
    await t.waitForEvent(of(id, 'delete', '/etc/runwatch-image-file'), 'delete (whiteout) of the image file');

    await dockerExec(id, ['chmod', 'u+s', '/bin/busybox']);
    const chmod = await t.waitForEvent(of(id, 'chmod', '/bin/busybox'), 'chmod u+s of the image binary');
    expect(chmod.mode! & 0o4000).toBe(0o4000);
    expect(chmod.previousMode! & 0o4000).toBe(0);

    await dockerExec(id, ['sh', '-c', 'mkdir -p /var/noise && echo x > /var/noise/f && echo y > /tmp/after-noise']);
    await t.waitForEvent(of(id, 'create', '/tmp/after-noise'), 'create /tmp/after-noise');
    expect(t.events.filter((e) => e.containerId === id && e.path.startsWith('/var/noise'))).toEqual([]);

    // The rules engine's verdicts on the same events: everything outside files.write, nothing inside it.
    const alert = (op: string, p: string) =>
      t.waitForRecord((r) => r.rule === 'file.write_not_allowed' && r.container?.id === id && r.file?.op === op && r.file.path === p);
    expect(await alert('create', '/etc/new-file')).toMatchObject({
      kind: 'alert',
      profile: 'file-sensor-test',
      decidedBy: 'files.write',
      container: { image: 'runwatch-test/busybox:1' },
    });
    await alert('modify', '/etc/runwatch-image-file');
    await alert('delete', '/etc/runwatch-image-file');
    expect((await alert('chmod', '/bin/busybox')).file?.mode).toBe('4755');
    const fileAlerts = (r: RunwatchRecord) => r.rule === 'file.write_not_allowed' && r.container?.id === id;
    expect(t.records.filter(fileAlerts).filter((r) => r.file?.path.startsWith('/tmp/'))).toEqual([]);
  });

  it('sees files written into directories created at the same moment (mkdir -p a/b/c && echo x > a/b/c/f)', async () => {
    const t = await startFileAgent();
    const id = await runContainer();
    await dockerExec(id, [
      'sh',
      '-c',
      'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do mkdir -p /srv/t$i/b/c && echo x > /srv/t$i/b/c/f; done',
    ]);
    for (let i = 1; i <= 20; i++) await t.waitForEvent(of(id, 'create', `/srv/t${i}/b/c/f`), `create /srv/t${i}/b/c/f`);
    expect(t.events.filter((e) => e.containerId === id && e.path.endsWith('/c/f')).map((e) => e.op)).not.toContain('delete');
  });

  it('gives symlinks their target and hard links their count and other path', async () => {
    const t = await startFileAgent();
    const id = await runContainer();
    await dockerExec(id, ['sh', '-c', 'ln -s /etc/shadow /tmp/shadow-link && ln /etc/passwd /tmp/passwd-link']);
    expect(await t.waitForEvent(of(id, 'create', '/tmp/shadow-link'), 'symlink')).toMatchObject({ linkTarget: '/etc/shadow' });
    expect(await t.waitForEvent(of(id, 'create', '/tmp/passwd-link'), 'hard link')).toMatchObject({ nlink: 2, linkTarget: '/etc/passwd' });
  });

  it('scans containers already running at start (marked discovered) and keeps watching them', async () => {
    const id = await runContainer();
    await dockerExec(id, ['sh', '-c', 'mkdir -p /opt/early && echo x > /opt/early/f']);
    const t = await startFileAgent();
    const early = t.events.find(of(id, 'create', '/opt/early/f')) ?? (await t.waitForEvent(of(id, 'create', '/opt/early/f'), 'the earlier write'));
    expect(early.discovered).toBe(true);
    await dockerExec(id, ['sh', '-c', 'echo y > /opt/early/g']);
    expect((await t.waitForEvent(of(id, 'create', '/opt/early/g'), 'a write after start')).discovered).toBeUndefined();
  });

  it('does not report the mount points Docker makes, and cannot see writes into mounts (documented limit)', async () => {
    const t = await startFileAgent();
    const vol = mkdtempSync(path.join(tmpdir(), 'rw-file-vol-'));
    onTestFinished(() => rmSync(vol, { recursive: true, force: true }));
    const id = await runContainer({ flags: ['-v', `${vol}:/srv/data`, '--tmpfs', '/scratch'] });
    await dockerExec(id, ['sh', '-c', 'echo x > /srv/data/in-volume && echo y > /scratch/in-tmpfs && echo z > /srv/beside']);
    await t.waitForEvent(of(id, 'create', '/srv/beside'), 'the write beside the mounts');
    const paths = t.events.filter((e) => e.containerId === id).map((e) => e.path);
    expect(paths).not.toContain('/srv');
    expect(paths).not.toContain('/srv/data');
    expect(paths).not.toContain('/scratch');
    expect(paths.filter((p) => p.startsWith('/srv/data/') || p.startsWith('/scratch/'))).toEqual([]);
  });

  it('names the process running in the container when the process sensor is on', async () => {
    const t = await startFileAgent({ sensors: { process: { enabled: true } } });
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['sleep', 'infinity'] });
    await dockerExec(id, ['sh', '-c', 'echo x > /etc/written-by-sh']);
    const ev = await t.waitForEvent(of(id, 'create', '/etc/written-by-sh'), 'the write');
    // A process of this container, as the lookup knows it (not necessarily the writer: the layer does not say who wrote).
    expect(ev.process?.exe).toMatch(/^\/(bin\/busybox|bin\/sh|usr\/bin\/sleep)$/);
    expect(ev.process?.pid).toBeGreaterThan(0);
  });

  it('answers process.drift questions: is a path in the container layer', async () => {
    const t = await startFileAgent();
    const id = await runContainer();
    await dockerExec(id, ['sh', '-c', 'cp /bin/busybox /tmp/dropped && rm /etc/runwatch-image-file']);
    await t.waitForEvent(of(id, 'delete', '/etc/runwatch-image-file'), 'the delete');
    const info = t.agent.inventory.get(id)!;
    expect(isInUpperLayer(info, '/tmp/dropped')).toBe(true);
    expect(isInUpperLayer(info, '/bin/busybox')).toBe(false);
    expect(isInUpperLayer(info, '/etc/runwatch-image-file')).toBe(false);
  });

  it('degrades with a count, a health note and a notice when the watch limit is reached', async () => {
    const t = await startFileAgent({ sensors: { file: { maxWatchedDirsPerContainer: 3 } } });
    const id = await runContainer();
    await dockerExec(id, ['sh', '-c', 'mkdir -p /deep/a/b/c/d && echo x > /deep/a/b/c/d/f']);
    const notice = await t.waitForRecord((r) => r.rule === 'sensor.file_watch_limit' && r.container?.id === id);
    expect(notice.message).toContain('maxWatchedDirsPerContainer');
    const health = t.agent.health().sensors as Record<string, { state: string; lastError?: string; details: Record<string, number> }>;
    expect(health.file.state).toBe('degraded');
    expect(health.file.details.unwatchedDirs).toBeGreaterThan(0);
    expect(health.file.lastError).toContain('not watched');
  });

  it('groups a write storm by pathPrefix into few alerts whose counts add up exactly', async () => {
    const alerts: FileChangeEvent[] = [];
    const t = await startFileAgent({ pipeline: { groupWindowSeconds: 60 } });
    // The subject proposed to the engine (pathPrefix); the engine today groups by the exact path.
    t.agent.setDecider({
      decide: (ev) => {
        if (ev.kind !== 'file_change' || !ev.path.startsWith('/storm/')) return [];
        alerts.push(ev);
        return [{ kind: 'alert', rule: 'file.write_not_allowed', severity: 'medium', message: `File ${ev.path} was written`, subject: ev.pathPrefix }];
      },
    });
    const id = await runContainer();
    await dockerExec(id, [
      'sh',
      '-c',
      'for d in 0 1 2 3 4; do mkdir -p /storm/d$d; i=0; while [ $i -lt 200 ]; do echo x > /storm/d$d/f$i; i=$((i+1)); done; done',
    ]);
    for (let d = 0; d < 5; d++) await t.waitForEvent(of(id, 'create', `/storm/d${d}/f199`), `the storm's last file in d${d}`);
    await t.stop();
    const stormRecords = t.records.filter((r) => r.rule === 'file.write_not_allowed' && r.container?.id === id);
    expect(new Set(alerts.filter((e) => e.op === 'create' && /\/f\d+$/.test(e.path)).map((e) => e.path)).size).toBe(1000);
    expect(stormRecords.length).toBeLessThanOrEqual(2 * 6); // first + summary per subject: /storm and /storm/d0..d4
    expect(stormRecords.reduce((n, r) => n + (r.count ?? 1), 0)).toBe(alerts.length);
  });

  it('leaves no watch behind after 50 start/stop cycles (counted in the kernel and in health)', { timeout: 300_000 }, async () => {
    const t = await startFileAgent();
    const id = await runContainer({ cmd: ['sh', '-c', 'mkdir -p /w/x/y; exec sleep 300'] });
    const upper = (await docker(['inspect', '-f', '{{.GraphDriver.Data.UpperDir}}', id])).trim();
    const health = () => (t.agent.health().sensors as Record<string, { details: Record<string, number> }>).file.details;
    const opened0 = health().watchesOpened;
    const closed0 = health().watchesClosed;
    const upperIno = statSync(upper).ino;
    await waitFor(
      () => kernelWatchedInodes().has(upperIno),
      15_000,
      () => 'the first watch',
    );
    for (let i = 0; i < 50; i++) {
      await docker(['stop', '-t', '0', id]);
      await waitFor(
        () => !kernelWatchedInodes().has(upperIno),
        15_000,
        () => `watch closed after stop ${i + 1}`,
      );
      await docker(['start', id]);
      await waitFor(
        () => kernelWatchedInodes().has(upperIno),
        15_000,
        () => `watch opened after start ${i + 1}`,
      );
    }
    const ours = dirInodes(upper);
    await waitFor(
      () => ours.filter((ino) => kernelWatchedInodes().has(ino)).length === ours.length,
      15_000,
      () => 'every directory watched while running',
    );
    await docker(['stop', '-t', '0', id]);
    await waitFor(
      () => !kernelWatchedInodes().has(upperIno),
      15_000,
      () => 'watch closed after the last stop',
    );
    expect(ours.filter((ino) => kernelWatchedInodes().has(ino))).toEqual([]);
    expect(health().watchesOpened - opened0).toBeGreaterThanOrEqual(50);
    expect(health().watchesClosed - closed0).toBeGreaterThanOrEqual(51);
  });
});
