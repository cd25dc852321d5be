import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { describe, expect, it, onTestFinished } from 'vitest';
import { containerInfo } from '../../../helpers/container-info.js';
import type { ContainerInfo } from '../../../../agent/events/types.js';
import { ContainerInventory } from '../../../../agent/pipeline/container-inventory.js';
import { CgroupStatsReader, detectCgroupVersion } from '../../../../agent/sensors/resources/cgroup-stats-reader.js';
import { readingFromDockerStats } from '../../../../agent/sensors/resources/docker-stats-reader.js';
import { filesystemHolding } from '../../../../agent/sensors/resources/host-sampler.js';
import { ResourceCollector, toContainerSample } from '../../../../agent/sensors/resources/resource-collector.js';
import { ContainerGoneError } from '../../../../agent/sensors/resources/stats-reader.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../fixtures/cgroup');
const ID = 'c0ffee' + '0'.repeat(58);
const BEEF = 'beef' + '0'.repeat(60);
const GiB = 1024 ** 3;

function info(over: Partial<ContainerInfo> = {}): ContainerInfo {
  return containerInfo({ id: ID, pid: 0, ...over });
}

describe('CgroupStatsReader on fixture trees', () => {
  it('detects v1 and v2 hierarchies, and none elsewhere', () => {
    expect(detectCgroupVersion(path.join(FIXTURES, 'v1'))).toBe(1);
    expect(detectCgroupVersion(path.join(FIXTURES, 'v2'))).toBe(2);
    expect(detectCgroupVersion(path.join(FIXTURES, 'proc'))).toBeUndefined();
  });

  it('v1: finds the cgroup through /proc/<pid>/cgroup and reads it with the container network', async () => {
    const reader = new CgroupStatsReader({ cgroupRoot: path.join(FIXTURES, 'v1'), procRoot: path.join(FIXTURES, 'proc') });
    const r = await reader.read(info({ pid: 4242 }));
    expect(r).toMatchObject({ cpuUsageNs: 57_824_909, memoryLimitBytes: 64 * 1024 * 1024, pids: 3, networkRxBytes: 0, networkTxBytes: 0 });
    expect(r.atMs).toBeGreaterThan(Date.now() - 60_000);
  });

  it('v2 with the systemd driver: docker-<id>.scope, from the pid or by convention', async () => {
    const reader = new CgroupStatsReader({ cgroupRoot: path.join(FIXTURES, 'v2'), procRoot: path.join(FIXTURES, 'proc') });
    expect(reader.locate(info({ pid: 5151 }))).toBe(`/system.slice/docker-${ID}.scope`);
    const byConvention = new CgroupStatsReader({ cgroupRoot: path.join(FIXTURES, 'v2'), procRoot: '/nonexistent' });
    expect(byConvention.locate(info({ pid: 0 }))).toBe(`/system.slice/docker-${ID}.scope`);
    const r = await reader.read(info({ pid: 5151 }));
    expect(r).toMatchObject({ cpuUsageNs: 2_500_000_000, pids: 7, networkRxBytes: 12_345_679_901, networkTxBytes: 2_000_500 });
  });

  it('v2 with the cgroupfs driver: /docker/<id>, no limit, no network for --network host', async () => {
    const reader = new CgroupStatsReader({ cgroupRoot: path.join(FIXTURES, 'v2'), procRoot: '/nonexistent' });
    const r = await reader.read(info({ id: BEEF, networkMode: 'host', hostNamespaces: { pid: false, net: true, ipc: false, uts: false, userns: false } }));
    expect(r).toMatchObject({ cpuUsageNs: 100_000, memoryBytes: 1_048_576, memoryLimitBytes: Infinity, pids: 1 });
    expect(r.networkRxBytes).toBeUndefined();
  });

  it('reports a container whose cgroup vanished between locate and read as gone', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'rw-cgroup-'));
    onTestFinished(() => rmSync(root, { recursive: true, force: true }));
    writeFileSync(path.join(root, 'cgroup.controllers'), 'cpu memory io pids\n');
    const dir = path.join(root, 'docker', ID);
    mkdirSync(dir, { recursive: true });
    const reader = new CgroupStatsReader({ cgroupRoot: root, procRoot: '/nonexistent' });
    expect(reader.locate(info())).toBe(`/docker/${ID}`);
    // cpu.stat and the rest were never written: same as a cgroup removed mid-read.
    await expect(reader.read(info())).rejects.toBeInstanceOf(ContainerGoneError);
    rmSync(dir, { recursive: true });
    expect(reader.locate(info())).toBeUndefined();
  });

  it('reports a running process without a findable cgroup as an error, not as gone', async () => {
    const reader = new CgroupStatsReader({ cgroupRoot: path.join(FIXTURES, 'v1'), procRoot: path.join(FIXTURES, 'proc') });
    const unknown = info({ id: 'dead' + '0'.repeat(60), pid: 4343 });
    await expect(reader.read(unknown)).rejects.toMatchObject({ code: 'RW_SENSOR', message: expect.stringContaining('no cgroup found') });
    await expect(reader.read({ ...unknown, pid: 9999 })).rejects.toBeInstanceOf(ContainerGoneError);
  });
});

describe('Docker stats API answers', () => {
  const stats = JSON.parse(readFileSync(path.join(FIXTURES, 'docker-api/stats-v1-one-shot.json'), 'utf8')) as Docker.ContainerStats;

  it('map to the same figures as the cgroup files (captured from the same kind of container)', () => {
    const r = readingFromDockerStats(stats, info());
    expect(r).toEqual({
      cpuUsageNs: 63_356_518,
      atMs: Date.parse(stats.read),
      memoryBytes: 43_081_728,
      memoryLimitBytes: 64 * 1024 * 1024,
      blockReadBytes: 0,
      blockWriteBytes: 4 * 1024 * 1024,
      pids: 3,
      networkRxBytes: 0,
      networkTxBytes: 0,
    });
  });

  it('sum the networks a container has and treat a zero read time as a stopped container', () => {
    const withNets = { ...stats, networks: { eth0: { rx_bytes: 10, tx_bytes: 1 }, eth1: { rx_bytes: 5, tx_bytes: 2 } } } as unknown as Docker.ContainerStats;
    expect(readingFromDockerStats(withNets, info())).toMatchObject({ networkRxBytes: 15, networkTxBytes: 3 });
    expect(() => readingFromDockerStats({ ...stats, read: '0001-01-01T00:00:00Z' }, info())).toThrow(ContainerGoneError);
  });
});

describe('toContainerSample', () => {
  const base = {
    cpuUsageNs: 0,
    atMs: 1_000_000,
    memoryBytes: 512 * 1024 ** 2,
    memoryLimitBytes: 1 * GiB,
    blockReadBytes: 1,
    blockWriteBytes: 2,
    pids: 4,
    networkRxBytes: 10,
    networkTxBytes: 20,
  };
  const host = { ts: 5, hostCores: 4, hostMemoryBytes: 16 * GiB };

  it('has no CPU figure without a previous reading', () => {
    const s = toContainerSample({ info: info(), reading: base, ...host });
    expect(s.cpuCores).toBeUndefined();
    expect(s).toMatchObject({
      kind: 'resource_sample',
      scope: 'container',
      containerId: ID,
      memoryBytes: 512 * 1024 ** 2,
      memoryLimitBytes: GiB,
      memoryPercent: 50,
      pids: 4,
      networkRxBytes: 10,
    });
  });

  it('gives cores over the interval and percent of the CPU limit, or of the host cores without one', () => {
    const later = { ...base, cpuUsageNs: 3e9, atMs: base.atMs + 2000 };
    expect(toContainerSample({ info: info({ cpuLimit: 2 }), reading: later, previous: base, ...host })).toMatchObject({ cpuCores: 1.5, cpuPercent: 75 });
    expect(toContainerSample({ info: info(), reading: later, previous: base, ...host })).toMatchObject({ cpuCores: 1.5, cpuPercent: 37.5 });
    expect(toContainerSample({ info: info({ cpuLimit: 8 }), reading: later, previous: base, ...host }).cpuPercent).toBe(37.5);
  });

  it('skips CPU when the counter went back (restarted container)', () => {
    expect(
      toContainerSample({ info: info(), reading: { ...base, atMs: base.atMs + 1000 }, previous: { ...base, cpuUsageNs: 5e9 }, ...host }).cpuCores,
    ).toBeUndefined();
  });

  it('treats a limit at or above host memory as none: percent of host memory, no limit field', () => {
    for (const limit of [Infinity, 9223372036854771712, 16 * GiB]) {
      const s = toContainerSample({ info: info(), reading: { ...base, memoryLimitBytes: limit }, ...host });
      expect(s.memoryLimitBytes).toBeUndefined();
      expect(s.memoryPercent).toBe(3.13);
    }
  });
});

describe('ResourceCollector', () => {
  it('counts a container whose cgroup is gone and still samples the others', async () => {
    const inventory = new ContainerInventory();
    inventory.upsert(info({ pid: 4242 }));
    inventory.upsert(info({ id: 'dead' + '0'.repeat(60) }));
    const collector = new ResourceCollector({
      inventory,
      cgroup: new CgroupStatsReader({ cgroupRoot: path.join(FIXTURES, 'v1'), procRoot: path.join(FIXTURES, 'proc') }),
    });
    const samples = await collector.collect();
    expect(samples.map((s) => s.containerId)).toEqual([ID]);
    expect(collector.counters).toMatchObject({ cycles: 1, containerSamples: 1, readErrors: 1, containersGone: 1, readByCgroup: 1 });
    expect(collector.lastError).toBeUndefined();
  });
});

describe('filesystemHolding', () => {
  const fs = (mount: string, type = 'ext4') => ({ fs: 'x', type, size: 1, used: 1, available: 0, use: 100, mount, rw: true });
  it('picks the deepest mount containing the path, never an overlay', () => {
    const list = [fs('/'), fs('/var'), fs('/var/lib/docker/overlay2/abc/merged', 'overlay'), fs('/variant')];
    expect(filesystemHolding(list, '/var/lib/docker')?.mount).toBe('/var');
    expect(filesystemHolding(list, '/srv')?.mount).toBe('/');
    expect(filesystemHolding([fs('/var/lib/docker/overlay2/abc/merged', 'overlay')], '/var/lib/docker/overlay2/abc/merged')).toBeUndefined();
  });
});
