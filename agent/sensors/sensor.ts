import type { Config } from '../config/load.js';
import type { ProcessSummary } from '../events/types.js';
import type { Logger } from '../log.js';
import type { EventQueue } from '../pipeline/event-queue.js';
import type { ContainerInventory } from '../pipeline/container-inventory.js';

export type SensorName = 'docker' | 'process' | 'file' | 'network' | 'resources';

export interface SensorHealth {
  state: 'starting' | 'running' | 'degraded' | 'stopped';
  lastError?: string;
  /** Events pushed into the queue. */
  emitted: number;
  /** Events lost (queue full, kernel buffer overflow …). */
  dropped: number;
  /** Sensor-specific facts for the health report (coverage, source in use …). */
  details?: Record<string, string | number | boolean>;
}

/** What a sensor gets to work with; passed explicitly, never read from globals. */
export interface SensorContext {
  config: Config;
  queue: EventQueue;
  /** Read-only for every sensor but docker, which keeps it current. */
  inventory: ContainerInventory;
  log: Logger;
  signal: AbortSignal;
  /**
   * Optional, wired by the composition root when the process sensor can answer: the process most recently
   * seen running in a container, named on file and network events. Absent = events carry no process.
   */
  processLookup?: (containerId: string) => ProcessSummary | undefined;
}

/** An event source. Produces {@link RunwatchEvent}s into the queue and nothing else. */
export interface Sensor {
  readonly name: SensorName;
  /** Resolves once the sensor is ready (e.g. the initial inventory is listed). Fatal problems reject. */
  start(ctx: SensorContext): Promise<void>;
  /** Stops producing; idempotent. */
  stop(): Promise<void>;
  health(): SensorHealth;
}

export type SensorFactory = (config: Config) => Sensor;
