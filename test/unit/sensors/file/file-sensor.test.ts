import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { containerInfo } from '../../../helpers/container-info.js';
import { parseConfig } from '../../../../agent/config/load.js';
import type { ContainerInfo, FileChangeEvent } from '../../../../agent/events/types.js';
import { silentLogger } from '../../../../agent/log.js';
import { ContainerInventory } from '../../../../agent/pipeline/container-inventory.js';
import { EventQueue } from '../../../../agent/pipeline/event-queue.js';
import { FileSensor, type FileSensorOptions } from '../../../../agent/sensors/file/file-sensor.js';

let root: string;
let sensors: FileSensor[];

beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'rw-file-sensor-'));
  sensors = [];
});

afterEach(async () => {
  for (const s of sensors) await s.stop();
  rmSync(root, { recursive: true, force: true });
});

function container(n: number): ContainerInfo {
  const upperDir = path.join(root, `c${n}`, 'upper');
  mkdirSync(upperDir, { recursive: true });
  return containerInfo({ id: String(n).repeat(64).slice(0, 64), name: `c${n}`, upperDir, lowerDirs: [] });
}

async function startSensor(opts: Partial<FileSensorOptions> = {}) {
  const inventory = new ContainerInventory();
  const queue = new EventQueue(100_000);
  const sensor = new FileSensor({ maxWatchedDirsPerContainer: 100, maxWatchedDirsTotal: 1000, ignore: [], groupDepth: 3, ...opts });
  sensors.push(sensor);
  await sensor.start({ config: parseConfig('{}', 'test.yaml', { env: {} }), queue, inventory, log: silentLogger, signal: new AbortController().signal });
  const events: FileChangeEvent[] = [];
  const drain = () => {
    for (const ev of queue.take(Number.MAX_SAFE_INTEGER)) if (ev.kind === 'file_change') events.push(ev);
    return events;
  };
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      await sensor.whenIdle();
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { sensor, inventory, drain, settle, details: () => sensor.health().details as Record<string, number> };
}

describe('FileSensor', () => {
  it('follows the inventory: watches on add, closes every watch on remove, and re-reports nothing on restart', async () => {
    const { inventory, drain, settle, details } = await startSensor();
    const c = container(1);
    inventory.upsert(c);
    mkdirSync(path.join(c.upperDir!, 'a/b'), { recursive: true });
    writeFileSync(path.join(c.upperDir!, 'a/b/f'), 'x');
    await settle();
    expect(drain().map((e) => e.path)).toEqual(['/a', '/a/b', '/a/b/f']);
    expect(details()).toMatchObject({ containers: 1, watchedDirs: 3 });
    inventory.remove(c.id);
    expect(details()).toMatchObject({ containers: 0, watchedDirs: 0, watchesOpened: 1, watchesClosed: 1, retainedContainers: 1 });
    inventory.upsert(c);
    writeFileSync(path.join(c.upperDir!, 'a/new'), 'x');
    await settle();
    expect(
      drain()
        .slice(3)
        .map((e) => `${e.op} ${e.path} ${e.discovered ?? false}`),
    ).toEqual(['create /a/new true']);
  });

  it('counts containers without an overlay upper layer instead of failing', async () => {
    const { inventory, details } = await startSensor();
    inventory.upsert({ ...container(2), upperDir: undefined });
    expect(details()).toMatchObject({ containers: 0, noUpperLayer: 1 });
  });
});
