import Docker from 'dockerode';
import { RunwatchError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Sensor, SensorContext, SensorHealth } from '../sensor.js';
import { CgroupStatsReader } from './cgroup-stats-reader.js';
import { DockerStatsReader } from './docker-stats-reader.js';
import { HostSampler } from './host-sampler.js';
import { ResourceCollector } from './resource-collector.js';

export type MetricsSource = 'auto' | 'cgroup' | 'docker-api';

export interface ResourceSensorOptions {
  intervalMs: number;
  /**
   * auto = cgroup files, and the Docker stats API for a container whose cgroup is not found (e.g. the agent
   * runs without the host's /sys/fs/cgroup). Reading cgroups is the cheaper path: `npm run bench resources`.
   */
  source: MetricsSource;
  dockerSocket: string;
  cgroupRoot?: string;
  procRoot?: string;
}

/**
 * Every interval, pushes a {@link ResourceSampleEvent} per running container (from the inventory) and one for
 * the host. Samples may be dropped when the queue is full; every drop is counted.
 */
export class ResourceSensor implements Sensor {
  readonly name = 'resources' as const;
  private collector: ResourceCollector | undefined;
  private cgroup: CgroupStatsReader | undefined;
  private ctx!: SensorContext;
  private log!: Logger;
  private state: SensorHealth['state'] = 'stopped';
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private unsubscribe: (() => void) | undefined;
  private readonly stats = { emitted: 0, dropped: 0, overruns: 0, cycleErrors: 0, lastCycleMs: 0 };

  constructor(private readonly opts: ResourceSensorOptions) {}

  async start(ctx: SensorContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log.child({ sensor: 'resources' });
    this.state = 'starting';
    this.stopped = false;
    const { source } = this.opts;
    // Bounded so that a hung daemon delays one cycle instead of stalling them all.
    const docker = new Docker({ socketPath: this.opts.dockerSocket, timeout: Math.max(this.opts.intervalMs, 5_000) });
    if (source !== 'docker-api') {
      this.cgroup = new CgroupStatsReader({ cgroupRoot: this.opts.cgroupRoot, procRoot: this.opts.procRoot });
      if (!this.cgroup.version) {
        const root = this.opts.cgroupRoot ?? '/sys/fs/cgroup';
        if (source === 'cgroup')
          throw new RunwatchError('RW_SENSOR', `no cgroup v1 or v2 hierarchy at ${root}; mount the host's cgroups or use metrics.source: docker-api`, {
            field: 'metrics.source',
          });
        this.log.warn('no cgroup hierarchy found, reading metrics through the Docker stats API', { cgroupRoot: root });
        this.cgroup = undefined;
      }
    }
    const host = new HostSampler({ diskPath: await dockerRootDir(docker) });
    void host.prime();
    this.collector = new ResourceCollector({
      inventory: ctx.inventory,
      cgroup: this.cgroup,
      dockerApi: source === 'cgroup' ? undefined : new DockerStatsReader({ docker }),
      host,
    });
    const collector = this.collector;
    await collector.primeAll(ctx.inventory.list());
    this.unsubscribe = ctx.inventory.subscribe((change) => {
      if (change.type === 'added') void collector.prime(change.info);
    });
    this.state = 'running';
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    this.unsubscribe?.();
    this.state = 'stopped';
  }

  health(): SensorHealth {
    const { emitted, dropped, ...rest } = this.stats;
    return {
      state: this.state,
      lastError: this.collector?.lastError,
      emitted,
      dropped,
      details: { source: this.opts.source, cgroupVersion: this.cgroup?.version ? `v${this.cgroup.version}` : 'none', ...rest, ...this.collector?.counters },
    };
  }

  /** Fixed-rate cycles; a cycle that runs past the next tick skips it (counted as an overrun). */
  private async run(): Promise<void> {
    let next = performance.now() + this.opts.intervalMs;
    while (!this.stopped) {
      await this.sleep(next - performance.now());
      if (this.stopped) break;
      const t0 = performance.now();
      await this.cycle();
      this.stats.lastCycleMs = Math.round((performance.now() - t0) * 100) / 100;
      next += this.opts.intervalMs;
      if (performance.now() > next) {
        this.stats.overruns++;
        next = performance.now() + this.opts.intervalMs;
      }
    }
  }

  private async cycle(): Promise<void> {
    const collector = this.collector!;
    const goneBefore = collector.counters.containersGone;
    const errorsBefore = collector.counters.readErrors;
    try {
      for (const sample of await collector.collect()) {
        if (this.ctx.queue.push(sample)) this.stats.emitted++;
        else this.stats.dropped++;
      }
      const unexplained = collector.counters.readErrors - errorsBefore - (collector.counters.containersGone - goneBefore);
      this.state = unexplained > 0 ? 'degraded' : 'running';
    } catch (err) {
      // collect() counts per-container failures itself; this is a bug guard so one bad cycle never ends the loop.
      this.stats.cycleErrors++;
      this.state = 'degraded';
      this.log.error('resource collection cycle failed', { error: String(err) });
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(
        () => {
          this.wake = undefined;
          resolve();
        },
        Math.max(0, ms),
      );
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}

/** Docker's data root, whose filesystem the host sample reports on; "/" when the daemon does not say. */
async function dockerRootDir(docker: Docker): Promise<string> {
  try {
    const info = (await docker.info()) as { DockerRootDir?: string };
    return info.DockerRootDir || '/';
  } catch {
    return '/';
  }
}
