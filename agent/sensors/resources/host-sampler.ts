import os from 'node:os';
import si, { type Systeminformation } from 'systeminformation';
import type { ResourceSampleEvent } from '../../events/types.js';

export interface HostSamplerOptions {
  /** Disk usage is reported for the filesystem holding this path (Docker's data root: images, layers, writable layers). */
  diskPath: string;
}

/** Interfaces left out of host traffic: lo, and Docker's veths and bridges, whose traffic also crosses the real NIC. */
const SKIPPED_INTERFACES = /^(lo|veth.*|docker\d+|br-[0-9a-f]+)$/;

/** The host's own sample (scope 'host') through systeminformation. */
export class HostSampler {
  private primed: Promise<unknown> | undefined;

  constructor(private readonly opts: HostSamplerOptions) {}

  /** systeminformation measures CPU load since its previous call; the first call only sets the starting point. */
  prime(): Promise<unknown> {
    this.primed ??= si.currentLoad().catch(() => undefined);
    return this.primed;
  }

  async sample(ts: number): Promise<ResourceSampleEvent> {
    await this.prime();
    const [load, mem, filesystems, nets] = await Promise.all([si.currentLoad(), si.mem(), si.fsSize(), si.networkStats('*')]);
    const cores = os.availableParallelism();
    const ev: ResourceSampleEvent = {
      kind: 'resource_sample',
      ts,
      scope: 'host',
      cpuCores: round((load.currentLoad / 100) * cores, 4),
      cpuPercent: round(load.currentLoad, 2),
      // "active" is total minus available: what the page cache cannot give back.
      memoryBytes: mem.active,
      memoryLimitBytes: mem.total,
      memoryPercent: round((mem.active / mem.total) * 100, 2),
      load1: os.loadavg()[0],
      networkRxBytes: 0,
      networkTxBytes: 0,
    };
    for (const n of nets) {
      if (SKIPPED_INTERFACES.test(n.iface)) continue;
      ev.networkRxBytes! += n.rx_bytes;
      ev.networkTxBytes! += n.tx_bytes;
    }
    const fs = filesystemHolding(filesystems, this.opts.diskPath);
    if (fs) {
      ev.diskUsedBytes = fs.used;
      ev.diskTotalBytes = fs.size;
    }
    return ev;
  }
}

/** The mounted filesystem (overlays aside) with the longest mount point that contains `target`. */
export function filesystemHolding(list: readonly Systeminformation.FsSizeData[], target: string): Systeminformation.FsSizeData | undefined {
  let best: Systeminformation.FsSizeData | undefined;
  for (const fs of list) {
    if (fs.type === 'overlay') continue;
    const m = fs.mount;
    const contains = m === '/' || target === m || target.startsWith(m.endsWith('/') ? m : m + '/');
    if (contains && (!best || m.length > best.mount.length)) best = fs;
  }
  return best;
}

export function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
