import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { containerInfo } from '../../../helpers/container-info.js';
import type { ContainerInfo, FileChangeEvent } from '../../../../agent/events/types.js';
import { IgnoreMatcher } from '../../../../agent/sensors/file/ignore-matcher.js';
import { UpperLayerWatch, pathPrefix, type Baseline, type WatchBudget } from '../../../../agent/sensors/file/upper-layer-watch.js';

/** A real directory pair standing in for overlay2's upper and lower layers; inotify is real. */
let root: string;
let upper: string;
let lower: string;
let watches: UpperLayerWatch[];

function info(over: Partial<ContainerInfo> = {}): ContainerInfo {
  return containerInfo({ upperDir: upper, lowerDirs: [lower], ...over });
}

function startWatch(
  opts: { budget?: Partial<WatchBudget>; ignore?: string[]; baseline?: Baseline; info?: Partial<ContainerInfo>; canEmit?: () => boolean } = {},
) {
  const events: FileChangeEvent[] = [];
  const limits: string[] = [];
  const budget: WatchBudget = { perContainer: 1000, total: 1000, used: 0, ...opts.budget };
  const w = new UpperLayerWatch({
    info: info(opts.info),
    ignore: new IgnoreMatcher(opts.ignore ?? []),
    budget,
    groupDepth: 3,
    emit: (e) => events.push(e),
    canEmit: opts.canEmit ?? (() => true),
    onLimit: (_w, r) => limits.push(r),
    baseline: opts.baseline,
  });
  watches.push(w);
  w.start();
  return { w, events, limits, budget };
}

/** Lets inotify deliver and the watch settle: idle twice with a pause, since events land after the last flush. */
async function settle(w: UpperLayerWatch): Promise<void> {
  for (let i = 0; i < 2; i++) {
    await w.whenIdle();
    await new Promise((r) => setTimeout(r, 15));
  }
  await w.whenIdle();
}

const ops = (events: FileChangeEvent[]) => events.map((e) => `${e.op} ${e.path}`);

beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'rw-upper-'));
  upper = path.join(root, 'upper');
  lower = path.join(root, 'lower');
  mkdirSync(upper);
  mkdirSync(path.join(lower, 'etc'), { recursive: true });
  writeFileSync(path.join(lower, 'etc/passwd'), 'root:x:0:0\n');
  writeFileSync(path.join(lower, 'etc/image-file'), 'from the image\n');
  watches = [];
});

afterEach(() => {
  for (const w of watches) w.close();
  rmSync(root, { recursive: true, force: true });
});

describe('UpperLayerWatch (real inotify on a directory pair)', () => {
  it('sees a file written into directories created a moment earlier (the scan of new directories)', async () => {
    const { w, events } = startWatch();
    await settle(w);
    mkdirSync(path.join(upper, 'a/b/c'), { recursive: true });
    writeFileSync(path.join(upper, 'a/b/c/f'), 'x\n');
    await settle(w);
    expect(ops(events)).toEqual(['create /a', 'create /a/b', 'create /a/b/c', 'create /a/b/c/f']);
    expect(events.every((e) => !e.discovered)).toBe(true);
    expect(w.stats.watchedDirs).toBe(4);
  });

  it('tells a new file (create) from a changed image file (modify) and a chmod-only copy-up (chmod, with mode)', async () => {
    const { w, events } = startWatch();
    mkdirSync(path.join(upper, 'etc'));
    await settle(w);
    writeFileSync(path.join(upper, 'etc/new'), 'x');
    writeFileSync(path.join(upper, 'etc/image-file'), 'changed\n');
    // What overlayfs does for `chmod u+s`: a copy with the same data and times, another mode, renamed into place.
    const src = path.join(lower, 'etc/passwd');
    const work = path.join(root, 'work-passwd');
    utimesSync(src, 1_700_000_000, 1_700_000_000);
    copyFileSync(src, work);
    utimesSync(work, 1_700_000_000, 1_700_000_000);
    chmodSync(work, 0o4755);
    renameSync(work, path.join(upper, 'etc/passwd'));
    await settle(w);
    expect(ops(events).sort()).toEqual(['chmod /etc/passwd', 'create /etc/new', 'modify /etc/image-file']);
    const chmod = events.find((e) => e.op === 'chmod')!;
    expect(chmod.mode! & 0o7777).toBe(0o4755);
    expect(chmod.previousMode! & 0o7777).toBe(0o644);
    expect(events.find((e) => e.op === 'create')).toMatchObject({ pathPrefix: '/etc', containerId: 'f'.repeat(64) });
  });

  it('reports a whiteout as delete, a removed container file as delete, and a chmod of a known file', async () => {
    const { w, events } = startWatch();
    mkdirSync(path.join(upper, 'etc'));
    writeFileSync(path.join(upper, 'etc/mine'), 'x');
    await settle(w);
    events.length = 0;
    execFileSync('mknod', [path.join(upper, 'etc/image-file'), 'c', '0', '0']);
    unlinkSync(path.join(upper, 'etc/mine'));
    await settle(w);
    expect(ops(events).sort()).toEqual(['delete /etc/image-file', 'delete /etc/mine']);
    events.length = 0;
    writeFileSync(path.join(upper, 'etc/script'), '#!/bin/sh\n', { mode: 0o644 });
    await settle(w);
    chmodSync(path.join(upper, 'etc/script'), 0o6755);
    await settle(w);
    chownSync(path.join(upper, 'etc/script'), 1000, 1000);
    await settle(w);
    expect(ops(events)).toEqual(['create /etc/script', 'chmod /etc/script', 'chmod /etc/script']);
    expect(events[1]).toMatchObject({ previousMode: 0o100644 });
    expect(events[1].mode! & 0o7777).toBe(0o6755);
    expect(events[1].owner).toBeUndefined();
    expect(events[2].owner).toEqual({ uid: 1000, gid: 1000, previousUid: 0, previousGid: 0 });
  });

  it('gives symlinks their target and hard links their count and the other path', async () => {
    const { w, events } = startWatch();
    mkdirSync(path.join(upper, 'etc'));
    mkdirSync(path.join(upper, 'tmp'));
    await settle(w);
    symlinkSync('/etc/shadow', path.join(upper, 'tmp/s'));
    writeFileSync(path.join(upper, 'etc/passwd'), 'root:x:0:0\n'); // as a copy-up would leave it
    linkSync(path.join(upper, 'etc/passwd'), path.join(upper, 'tmp/h'));
    await settle(w);
    expect(events.find((e) => e.path === '/tmp/s')).toMatchObject({ op: 'create', linkTarget: '/etc/shadow' });
    expect(events.find((e) => e.path === '/tmp/h')).toMatchObject({ op: 'create', nlink: 2, linkTarget: '/etc/passwd' });
  });

  it('marks what the first read finds as discovered, and reports only differences when given the previous run', async () => {
    mkdirSync(path.join(upper, 'srv'));
    writeFileSync(path.join(upper, 'srv/old'), 'x');
    writeFileSync(path.join(upper, 'srv/kept'), 'x');
    const first = startWatch();
    await settle(first.w);
    expect(ops(first.events).sort()).toEqual(['create /srv', 'create /srv/kept', 'create /srv/old']);
    expect(first.events.every((e) => e.discovered)).toBe(true);
    const baseline = first.w.close();
    writeFileSync(path.join(upper, 'srv/old'), 'changed while stopped');
    const second = startWatch({ baseline });
    await settle(second.w);
    expect(ops(second.events)).toEqual(['create /srv/old']);
  });

  it('leaves directories unwatched past the limit, counts them and says so once', async () => {
    const { w, events, limits, budget } = startWatch({ budget: { perContainer: 2 } });
    await settle(w);
    mkdirSync(path.join(upper, 'a/b/c'), { recursive: true });
    mkdirSync(path.join(upper, 'd'));
    await settle(w);
    expect(w.stats.watchedDirs).toBe(2);
    expect(budget.used).toBe(2);
    expect(w.stats.unwatchedDirs).toBe(2);
    expect(limits).toHaveLength(1);
    expect(limits[0]).toContain('maxWatchedDirsPerContainer');
    expect(ops(events).sort()).toEqual(['create /a', 'create /a/b', 'create /d']);
  });

  it('neither reports nor watches ignored trees', async () => {
    const { w, events } = startWatch({ ignore: ['/cache/**', '/**/*.pid'] });
    await settle(w);
    mkdirSync(path.join(upper, 'cache/x'), { recursive: true });
    writeFileSync(path.join(upper, 'cache/x/f'), 'x');
    writeFileSync(path.join(upper, 'app.pid'), '1');
    writeFileSync(path.join(upper, 'kept'), '1');
    await settle(w);
    expect(ops(events)).toEqual(['create /kept']);
    expect(w.stats.watchedDirs).toBe(1);
  });

  it('drops the watches of a removed directory and closes all of them on close', async () => {
    const { w, events, budget } = startWatch();
    mkdirSync(path.join(upper, 'x/y'), { recursive: true });
    await settle(w);
    expect(w.stats.watchedDirs).toBe(3);
    rmSync(path.join(upper, 'x'), { recursive: true });
    await settle(w);
    expect(ops(events).slice(-2).sort()).toEqual(['delete /x', 'delete /x/y']);
    expect(w.stats.watchedDirs).toBe(1);
    w.close();
    expect(budget.used).toBe(0);
    expect(w.stats.watchedDirs).toBe(0);
  });

  it('suppresses the mount point Docker made and reports deletes only while the layer exists', async () => {
    mkdirSync(path.join(upper, 'srv/data'), { recursive: true });
    const { w, events } = startWatch({ info: { mounts: [{ type: 'bind', source: '/x', destination: '/srv/data', readOnly: false }] } });
    await settle(w);
    expect(ops(events)).toEqual([]);
    writeFileSync(path.join(upper, 'srv/f'), 'x');
    await settle(w);
    expect(ops(events)).toEqual(['create /srv/f']);
    rmSync(upper, { recursive: true });
    await settle(w);
    expect(ops(events)).toEqual(['create /srv/f']);
    expect(w.stats.afterStop).toBeGreaterThan(0);
  });
});

describe('UpperLayerWatch backpressure', () => {
  it('holds changes while the queue is nearly full and reports them all once it drains', async () => {
    let open = false;
    const { w, events } = startWatch({ canEmit: () => open });
    for (let i = 0; i < 50; i++) writeFileSync(path.join(upper, `f${i}`), 'x');
    await new Promise((r) => setTimeout(r, 60));
    expect(events).toEqual([]);
    expect(w.stats.backpressureWaits).toBeGreaterThan(0);
    open = true;
    await settle(w);
    expect(new Set(events.filter((e) => e.op === 'create').map((e) => e.path)).size).toBe(50);
  });
});

describe('pathPrefix', () => {
  it('is the parent directory cut to the group depth', () => {
    expect(pathPrefix('/etc/passwd', 3)).toBe('/etc');
    expect(pathPrefix('/f', 3)).toBe('/');
    expect(pathPrefix('/data/storm/d17/f5', 3)).toBe('/data/storm/d17');
    expect(pathPrefix('/a/b/c/d/e/f', 3)).toBe('/a/b/c');
    expect(pathPrefix('/a/b/c/d/e/f', 1)).toBe('/a');
    expect(pathPrefix('/a/b', 1)).toBe('/a');
    expect(pathPrefix('/a/b', 3)).toBe('/a');
  });
});
