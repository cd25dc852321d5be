import os from 'node:os';
import { errorMessage } from '../../errors.js';
import type { ContainerInfo, ResourceSampleEvent } from '../../events/types.js';
import type { ContainerInventory } from '../../pipeline/container-inventory.js';
import type { ContainerReading } from './cgroup-parsers.js';
import type { CgroupStatsReader } from './cgroup-stats-reader.js';
import { round, type HostSampler } from './host-sampler.js';
import { ContainerGoneError, type ContainerStatsReader, type StatsSource } from './stats-reader.js';

export interface ResourceCollectorOptions {
  inventory: ContainerInventory;
  /** With both, a container is read from its cgroup when that is found and through the Docker API otherwise. */
  cgroup?: CgroupStatsReader;
  dockerApi?: ContainerStatsReader;
  /** Left out: no host sample. */
  host?: HostSampler;
  /** Concurrent reads (only the Docker API path actually waits). */
  concurrency?: number;
  hostCores?: number;
  hostMemoryBytes?: number;
}

export interface ResourceCounters {
  cycles: number;
  containerSamples: number;
  hostSamples: number;
  /** Container reads that failed, for any reason ({@link containersGone} included). */
  readErrors: number;
  /** Failed reads explained by the container having stopped since the inventory listed it. */
  containersGone: number;
  hostErrors: number;
  readByCgroup: number;
  readByDockerApi: number;
}

/**
 * One collection cycle: a sample per running container plus the host's. A container that fails to read
 * (typically because it stopped mid-cycle) is counted and skipped; it never stops the cycle.
 */
export class ResourceCollector {
  readonly counters: ResourceCounters = {
    cycles: 0,
    containerSamples: 0,
    hostSamples: 0,
    readErrors: 0,
    containersGone: 0,
    hostErrors: 0,
    readByCgroup: 0,
    readByDockerApi: 0,
  };
  lastError: string | undefined;
  private readonly previous = new Map<string, { source: StatsSource; reading: ContainerReading }>();
  private readonly hostCores: number;
  private readonly hostMemoryBytes: number;

  constructor(private readonly opts: ResourceCollectorOptions) {
    if (!opts.cgroup && !opts.dockerApi) throw new Error('ResourceCollector needs a cgroup or a Docker API reader');
    this.hostCores = opts.hostCores ?? os.availableParallelism();
    this.hostMemoryBytes = opts.hostMemoryBytes ?? os.totalmem();
  }

  /** Reads a baseline for a container so that its first sample already carries a CPU figure. */
  async prime(info: ContainerInfo): Promise<void> {
    const reader = this.readerFor(info);
    try {
      this.previous.set(info.id, { source: reader.source, reading: await reader.read(info) });
    } catch (err) {
      if (!(err instanceof ContainerGoneError)) this.lastError = errorMessage(err);
    }
  }

  async primeAll(infos: readonly ContainerInfo[]): Promise<void> {
    await mapLimit(infos, this.opts.concurrency ?? 32, (info) => this.prime(info));
  }

  async collect(ts = Date.now()): Promise<ResourceSampleEvent[]> {
    const live = this.opts.inventory.list();
    const [containers, host] = await Promise.all([mapLimit(live, this.opts.concurrency ?? 32, (info) => this.sampleContainer(info, ts)), this.sampleHost(ts)]);
    const out = containers.filter((s): s is ResourceSampleEvent => s !== undefined);
    if (host) out.push(host);
    const ids = new Set(this.opts.inventory.list().map((c) => c.id));
    for (const id of this.previous.keys()) if (!ids.has(id)) this.previous.delete(id);
    this.opts.cgroup?.retain(ids);
    this.opts.dockerApi?.retain(ids);
    this.counters.cycles++;
    return out;
  }

  /** The cgroup reader when it finds the container's cgroup (or is the only one), else the Docker API. */
  private readerFor(info: ContainerInfo): ContainerStatsReader {
    const { cgroup, dockerApi } = this.opts;
    if (cgroup && (!dockerApi || cgroup.locate(info) !== undefined)) return cgroup;
    return dockerApi ?? (cgroup as ContainerStatsReader);
  }

  private async sampleContainer(info: ContainerInfo, ts: number): Promise<ResourceSampleEvent | undefined> {
    const reader = this.readerFor(info);
    let reading: ContainerReading;
    try {
      reading = await reader.read(info);
    } catch (err) {
      this.counters.readErrors++;
      this.previous.delete(info.id);
      if (err instanceof ContainerGoneError || !this.opts.inventory.isLive(info.id)) this.counters.containersGone++;
      else this.lastError = `${info.id.slice(0, 12)}: ${errorMessage(err)}`;
      return undefined;
    }
    if (reader.source === 'cgroup') this.counters.readByCgroup++;
    else this.counters.readByDockerApi++;
    const prev = this.previous.get(info.id);
    this.previous.set(info.id, { source: reader.source, reading });
    this.counters.containerSamples++;
    return toContainerSample({
      info,
      reading,
      previous: prev?.source === reader.source ? prev.reading : undefined,
      ts,
      hostCores: this.hostCores,
      hostMemoryBytes: this.hostMemoryBytes,
    });
  }

  private async sampleHost(ts: number): Promise<ResourceSampleEvent | undefined> {
    if (!this.opts.host) return undefined;
    try {
      const s = await this.opts.host.sample(ts);
      this.counters.hostSamples++;
      return s;
    } catch (err) {
      this.counters.hostErrors++;
      this.lastError = `host: ${errorMessage(err)}`;
      return undefined;
    }
  }
}

export interface ContainerSampleInput {
  info: ContainerInfo;
  reading: ContainerReading;
  /** The container's previous reading from the same source; without it the sample has no CPU figure. */
  previous?: ContainerReading;
  ts: number;
  hostCores: number;
  hostMemoryBytes: number;
}

/**
 * Turns cumulative figures into a sample. CPU is the usage between two readings, in cores and in percent of
 * the container's CPU limit, capped at the host's cores (a limit above them can never be reached), or of the
 * host's cores without a limit. A memory limit at or above the host's memory is no limit: the percentage is
 * then of the host's memory, as for CPU, and memoryLimitBytes is left out.
 */
export function toContainerSample(input: ContainerSampleInput): ResourceSampleEvent {
  const { info, reading: r, previous: p } = input;
  const ev: ResourceSampleEvent = {
    kind: 'resource_sample',
    ts: input.ts,
    scope: 'container',
    containerId: info.id,
    memoryBytes: r.memoryBytes,
    blockReadBytes: r.blockReadBytes,
    blockWriteBytes: r.blockWriteBytes,
    pids: r.pids,
  };
  // A restarted container gets a fresh cgroup whose counter starts again below the previous reading.
  if (p && r.atMs > p.atMs && r.cpuUsageNs >= p.cpuUsageNs) {
    const cores = (r.cpuUsageNs - p.cpuUsageNs) / ((r.atMs - p.atMs) * 1e6);
    const capacity = info.cpuLimit > 0 ? Math.min(info.cpuLimit, input.hostCores) : input.hostCores;
    ev.cpuCores = round(cores, 4);
    ev.cpuPercent = round((cores / capacity) * 100, 2);
  }
  const limited = r.memoryLimitBytes > 0 && r.memoryLimitBytes < input.hostMemoryBytes;
  if (limited) ev.memoryLimitBytes = r.memoryLimitBytes;
  ev.memoryPercent = round((r.memoryBytes / (limited ? r.memoryLimitBytes : input.hostMemoryBytes)) * 100, 2);
  if (r.networkRxBytes !== undefined) ev.networkRxBytes = r.networkRxBytes;
  if (r.networkTxBytes !== undefined) ev.networkTxBytes = r.networkTxBytes;
  return ev;
}

/** Maps with at most `limit` calls in flight, keeping order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
