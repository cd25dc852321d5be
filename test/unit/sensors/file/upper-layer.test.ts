import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IgnoreMatcher } from '../../../../agent/sensors/file/ignore-matcher.js';
import { isInUpperLayer, lowerEntry } from '../../../../agent/sensors/file/upper-layer.js';

let root: string;
const dir = (p: string) => path.join(root, p);

beforeAll(() => {
  root = mkdtempSync(path.join(tmpdir(), 'rw-layer-'));
  for (const d of ['upper/tmp', 'upper/etc', 'host/bin', 'top/etc', 'top/opt', 'bottom/etc', 'bottom/usr/lib']) mkdirSync(dir(d), { recursive: true });
  writeFileSync(dir('upper/tmp/dropped'), '#!/bin/sh\n');
  execFileSync('mknod', [dir('upper/etc/gone'), 'c', '0', '0']);
  writeFileSync(dir('host/bin/tool'), 'host file');
  symlinkSync(dir('host'), dir('upper/tmp/escape'));
  writeFileSync(dir('bottom/etc/passwd'), 'root');
  writeFileSync(dir('bottom/etc/deleted-by-top'), 'x');
  execFileSync('mknod', [dir('top/etc/deleted-by-top'), 'c', '0', '0']);
  writeFileSync(dir('bottom/usr/lib/libc.so'), 'x');
  execFileSync('mknod', [dir('top/usr'), 'c', '0', '0']);
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('isInUpperLayer (process.drift support)', () => {
  it('answers whether a path was written into the container layer', () => {
    const info = { upperDir: dir('upper') };
    expect(isInUpperLayer(info, '/tmp/dropped')).toBe(true);
    expect(isInUpperLayer(info, '/tmp/../tmp/dropped')).toBe(true);
    expect(isInUpperLayer(info, '/bin/sh')).toBe(false);
    expect(isInUpperLayer(info, '/etc/gone')).toBe(false); // a whiteout is a deletion, not a file
    expect(isInUpperLayer(info, '/tmp/dropped/x')).toBe(false);
    expect(isInUpperLayer(info, '/')).toBe(false);
    expect(isInUpperLayer({}, '/tmp/dropped')).toBe(false);
  });

  it('does not follow a container-made symlink out of the layer', () => {
    expect(isInUpperLayer({ upperDir: dir('upper') }, '/tmp/escape/bin/tool')).toBe(false);
  });
});

describe('lowerEntry', () => {
  const layers = () => [dir('top'), dir('bottom')];
  it('finds the image file in any layer, topmost first', () => {
    expect(lowerEntry(layers(), 'etc/passwd')?.isFile()).toBe(true);
    expect(lowerEntry(layers(), 'etc/nothing')).toBeUndefined();
  });
  it('honours whiteouts of higher layers, on the name and on an ancestor', () => {
    expect(lowerEntry(layers(), 'etc/deleted-by-top')).toBeUndefined();
    expect(lowerEntry(layers(), 'usr/lib/libc.so')).toBeUndefined();
  });
});

describe('IgnoreMatcher', () => {
  const m = new IgnoreMatcher(['/proc/**', '/run/**/*.pid', '/tmp/.X11-unix/**']);
  it('ignores paths and whole trees, roots included', () => {
    expect(m.ignores('/proc/1/status')).toBe(true);
    expect(m.ignores('/proc')).toBe(true);
    expect(m.ignores('/run/nginx/nginx.pid')).toBe(true);
    expect(m.ignores('/run/nginx/nginx.conf')).toBe(false);
    expect(m.ignores('/tmp/.X11-unix')).toBe(true);
    expect(m.ignores('/procfs')).toBe(false);
  });
  it('knows which directories need no watch', () => {
    expect(m.ignoresTree('/proc')).toBe(true);
    expect(m.ignoresTree('/proc/1')).toBe(true);
    expect(m.ignoresTree('/run')).toBe(false);
    expect(m.ignoresTree('/')).toBe(false);
  });
});
