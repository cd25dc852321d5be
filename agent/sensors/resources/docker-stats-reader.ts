import type Docker from 'dockerode';
import type { ContainerInfo } from '../../events/types.js';
import type { ContainerReading } from './cgroup-parsers.js';
import { ContainerGoneError, ownsNetwork, type ContainerStatsReader } from './stats-reader.js';

export interface DockerStatsReaderOptions {
  docker: Docker;
  /**
   * Ask for one sample (`one-shot`, API 1.41+) instead of two a second apart: CPU deltas are computed from
   * the previous cycle's reading anyway, so the daemon's own pre-sample is wasted work.
   */
  oneShot?: boolean;
}

/** Reads a container's figures through the Docker Engine stats API (`GET /containers/{id}/stats?stream=false`). */
export class DockerStatsReader implements ContainerStatsReader {
  readonly source = 'docker-api' as const;

  constructor(private readonly opts: DockerStatsReaderOptions) {}

  async read(info: ContainerInfo): Promise<ContainerReading> {
    let stats: Docker.ContainerStats;
    try {
      stats = await this.opts.docker.getContainer(info.id).stats(this.opts.oneShot === false ? { stream: false } : { stream: false, 'one-shot': true });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) throw new ContainerGoneError(info.id, { cause: err });
      throw err;
    }
    return readingFromDockerStats(stats, info);
  }

  retain(): void {}
}

/** Maps a stats API answer to the same figures the cgroup reader produces (memory as `docker stats` computes it). */
export function readingFromDockerStats(s: Docker.ContainerStats, info: ContainerInfo): ContainerReading {
  // A stopped container answers 200 with zeros and a zero time.
  if (!s.read || s.read.startsWith('0001-')) throw new ContainerGoneError(info.id);
  const mem = s.memory_stats ?? ({} as Partial<Docker.MemoryStats>);
  const memStat = (mem.stats ?? {}) as Partial<Record<string, number>>;
  const inactiveFile = memStat.total_inactive_file ?? memStat.inactive_file ?? 0;
  let blockReadBytes = 0;
  let blockWriteBytes = 0;
  for (const e of s.blkio_stats?.io_service_bytes_recursive ?? []) {
    const op = e.op.toLowerCase();
    if (op === 'read') blockReadBytes += e.value;
    else if (op === 'write') blockWriteBytes += e.value;
  }
  const reading: ContainerReading = {
    cpuUsageNs: s.cpu_stats?.cpu_usage?.total_usage ?? 0,
    atMs: Date.parse(s.read),
    memoryBytes: Math.max(0, (mem.usage ?? 0) - inactiveFile),
    memoryLimitBytes: mem.limit ?? Infinity,
    blockReadBytes,
    blockWriteBytes,
    pids: s.pids_stats?.current ?? 0,
  };
  if (ownsNetwork(info)) {
    let rx = 0;
    let tx = 0;
    for (const n of Object.values(s.networks ?? {})) {
      rx += n.rx_bytes;
      tx += n.tx_bytes;
    }
    reading.networkRxBytes = rx;
    reading.networkTxBytes = tx;
  }
  return reading;
}
