import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { containerInfo } from '../helpers/container-info.js';
import { parseConfig } from '../../agent/config/load.js';
import type { ContainerInfo, FileChangeEvent } from '../../agent/events/types.js';
import { silentLogger } from '../../agent/log.js';
import { ContainerInventory } from '../../agent/pipeline/container-inventory.js';
import { EventQueue } from '../../agent/pipeline/event-queue.js';
import { FileSensor, type FileSensorOptions } from '../../agent/sensors/file/file-sensor.js';

/**
 * A real inotify queue overflow (no Docker needed, but the real kernel and ten thousand real files, so it
 * lives with the integration tests). The directory stands in for a container's upper layer.
 */
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

async function startSensor(opts: Partial<FileSensorOptions>) {
  // tmpfs where there is one: ten thousand creates on a busy disk take seconds.
  const root = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'rw-file-overflow-'));
  const upperDir = path.join(root, 'upper');
  mkdirSync(upperDir);
  const inventory = new ContainerInventory();
  const queue = new EventQueue(100_000);
  const sensor = new FileSensor({ maxWatchedDirsPerContainer: 100, maxWatchedDirsTotal: 1000, ignore: [], groupDepth: 3, ...opts });
  await sensor.start({ config: parseConfig('{}', 'test.yaml', { env: {} }), queue, inventory, log: silentLogger, signal: new AbortController().signal });
  cleanup.push(async () => {
    await sensor.stop();
    rmSync(root, { recursive: true, force: true });
  });
  const c: ContainerInfo = containerInfo({ id: 'e'.repeat(64), upperDir, lowerDirs: [] });
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
  return { c, inventory, drain, settle, details: () => sensor.health().details as Record<string, number> };
}

describe('file sensor and inotify queue overflow (real kernel)', () => {
  it('recovers changes the kernel dropped when its inotify queue overflowed during an event-loop stall', async () => {
    // Enough new files that their create+modify events overflow fs.inotify.max_queued_events while this test blocks the loop.
    const files = Math.ceil(Number(readFileSync('/proc/sys/fs/inotify/max_queued_events', 'utf8')) / 2) + 500;
    const run = async (stallMs: number) => {
      const { c, inventory, drain, settle, details } = await startSensor({ stallMs, rescanCooldownMs: 0 });
      inventory.upsert(c);
      await settle();
      for (let i = 0; i < files; i++) writeFileSync(`${c.upperDir}/f${i}`, 'x');
      // Hold the loop long enough to count as a stall however fast the writes were (a quiet machine writes them in < 100 ms).
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 600);
      await new Promise((r) => setTimeout(r, 250)); // past the stall check's next tick
      await settle();
      return {
        seen: new Set(
          drain()
            .filter((e) => e.op === 'create')
            .map((e) => e.path),
        ).size,
        stalls: details().loopStalls,
      };
    };
    const withoutRescan = await run(1e9);
    expect(withoutRescan.seen).toBeLessThan(files); // the kernel really lost events
    const withRescan = await run(100);
    expect(withRescan.stalls).toBeGreaterThan(0);
    expect(withRescan.seen).toBe(files);
  });
});
