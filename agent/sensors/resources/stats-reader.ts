import type { ContainerInfo } from '../../events/types.js';
import type { ContainerReading } from './cgroup-parsers.js';

export type StatsSource = 'cgroup' | 'docker-api';

/** Reads one container's cumulative figures, from cgroup files or from the Docker stats API. */
export interface ContainerStatsReader {
  readonly source: StatsSource;
  /** Rejects with {@link ContainerGoneError} when the container stopped since the inventory listed it. */
  read(info: ContainerInfo): Promise<ContainerReading>;
  /** Forgets what it keeps about containers no longer in `live`. */
  retain(live: ReadonlySet<string>): void;
}

/** The container stopped between the inventory listing it and the read: expected now and then, counted apart. */
export class ContainerGoneError extends Error {
  constructor(
    readonly containerId: string,
    options?: { cause?: unknown },
  ) {
    super(`container ${containerId.slice(0, 12)} is gone`, options);
    this.name = 'ContainerGoneError';
  }
}

/** Whether the container's network traffic is its own: in host or container:<id> mode it is counted elsewhere. */
export function ownsNetwork(info: ContainerInfo): boolean {
  return !info.hostNamespaces.net && info.networkMode !== 'host' && !info.networkMode.startsWith('container:');
}
