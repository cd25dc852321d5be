import type { AgentNoticeEvent, ContainerInfo, FileChangeEvent } from '../../events/types.js';
import type { Logger } from '../../log.js';
import type { InventoryChange } from '../../pipeline/container-inventory.js';
import type { Sensor, SensorContext, SensorHealth } from '../sensor.js';
import { IgnoreMatcher } from './ignore-matcher.js';
import { processInotifyWatches } from './inotify-stats.js';
import { UpperLayerWatch, type Baseline, type UpperLayerWatchStats, type WatchBudget } from './upper-layer-watch.js';

export interface FileSensorOptions {
  maxWatchedDirsPerContainer: number;
  maxWatchedDirsTotal: number;
  ignore: readonly string[];
  groupDepth: number;
  /** An event-loop stall this long may have overflowed the kernel's inotify queue; default 1000 ms. */
  stallMs?: number;
  /** At most one full rescan per this interval; default 30 s. */
  rescanCooldownMs?: number;
}

/** Stopped containers whose last known layer state is kept, so a restart (or a crash loop) re-reports only differences. */
const RETAINED_CONTAINERS = 32;
const RETAINED_ENTRIES_MAX = 200_000;
/** Above this share of the event queue, watches pause instead of pushing (and losing) more. */
const QUEUE_HIGH_WATER = 0.5;
const STALL_CHECK_MS = 200;

/**
 * What each running container writes, from its overlay upper layer, as `file_change` events. Follows the
 * inventory: a container is watched from the moment it is seen running (already running ones at start)
 * until it stops; its watches are closed then.
 */
export class FileSensor implements Sensor {
  readonly name = 'file' as const;
  private ctx!: SensorContext;
  private log!: Logger;
  private readonly watches = new Map<string, UpperLayerWatch>();
  private readonly retained = new Map<string, { upperDir: string; baseline: Baseline }>();
  private readonly budget: WatchBudget;
  private readonly ignore: IgnoreMatcher;
  private unsubscribe: (() => void) | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private rescanDue = false;
  private lastRescanAt = -Infinity;
  private state: SensorHealth['state'] = 'stopped';
  /** Counters of watches already closed, so health totals are cumulative. */
  private readonly closedTotals = { ignored: 0, errors: 0, changesAfterStop: 0, backpressureWaits: 0 };
  private readonly stats = {
    emitted: 0,
    dropped: 0,
    watchesOpened: 0,
    watchesClosed: 0,
    noUpperLayer: 0,
    limitNotices: 0,
    unwatchedDirsClosed: 0,
    loopStalls: 0,
    rescans: 0,
  };

  constructor(private readonly opts: FileSensorOptions) {
    this.budget = { perContainer: opts.maxWatchedDirsPerContainer, total: opts.maxWatchedDirsTotal, used: 0 };
    this.ignore = new IgnoreMatcher(opts.ignore);
  }

  async start(ctx: SensorContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log.child({ sensor: 'file' });
    this.state = 'starting';
    this.unsubscribe = ctx.inventory.subscribe((change) => this.onInventory(change));
    for (const info of ctx.inventory.list()) this.watch(info);
    await Promise.all([...this.watches.values()].map((w) => w.whenIdle()));
    this.startStallCheck();
    this.state = 'running';
  }

  /**
   * libuv drops inotify's queue-overflow notice, so a lost event cannot be seen, only suspected: when the
   * event loop stood still long enough for the kernel queue (fs.inotify.max_queued_events) to fill, every
   * watched directory is read again and compared with what is known, so nothing stays lost.
   */
  private startStallCheck(): void {
    const stallMs = this.opts.stallMs ?? 1000;
    const cooldownMs = this.opts.rescanCooldownMs ?? 30_000;
    let last = performance.now();
    this.stallTimer = setInterval(() => {
      const now = performance.now();
      if (now - last - STALL_CHECK_MS > stallMs) {
        this.stats.loopStalls++;
        this.rescanDue = true;
      }
      last = now;
      if (this.rescanDue && now - this.lastRescanAt >= cooldownMs) {
        this.rescanDue = false;
        this.lastRescanAt = now;
        this.stats.rescans++;
        for (const w of this.watches.values()) w.rescan();
      }
    }, STALL_CHECK_MS);
    this.stallTimer.unref();
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    clearInterval(this.stallTimer);
    for (const id of [...this.watches.keys()]) this.unwatch(id);
    this.retained.clear();
    this.state = 'stopped';
  }

  health(): SensorHealth {
    let unwatchedDirs = 0;
    const totals = { ...this.closedTotals };
    for (const w of this.watches.values()) {
      unwatchedDirs += w.stats.unwatchedDirs;
      addCounts(totals, w.stats);
    }
    const degraded = unwatchedDirs > 0;
    const { emitted, dropped, ...rest } = this.stats;
    return {
      state: degraded && this.state === 'running' ? 'degraded' : this.state,
      lastError: degraded
        ? `${unwatchedDirs} directories of running containers are not watched (sensors.file.maxWatchedDirsPerContainer/maxWatchedDirsTotal or fs.inotify.max_user_watches): changes inside them are not seen`
        : undefined,
      emitted,
      dropped,
      details: {
        containers: this.watches.size,
        watchedDirs: this.budget.used,
        unwatchedDirs,
        processInotifyWatches: processInotifyWatches()?.length ?? -1,
        ...totals,
        retainedContainers: this.retained.size,
        ...rest,
      },
    };
  }

  /** Resolves once every watched container's queued changes are handled (tests, benchmarks). */
  async whenIdle(): Promise<void> {
    await Promise.all([...this.watches.values()].map((w) => w.whenIdle()));
  }

  private onInventory(change: InventoryChange): void {
    switch (change.type) {
      case 'added':
        this.watch(change.info);
        break;
      case 'updated':
        if (change.info.upperDir !== this.watches.get(change.info.id)?.upper) {
          this.unwatch(change.info.id);
          this.watch(change.info);
        }
        break;
      case 'removed':
        this.unwatch(change.info.id);
        break;
    }
  }

  private watch(info: ContainerInfo): void {
    if (this.watches.has(info.id) || !this.unsubscribe) return;
    if (!info.upperDir) {
      this.stats.noUpperLayer++;
      if (this.stats.noUpperLayer <= 5)
        this.log.warn('container has no overlay2 upper layer; its file changes are not seen', { container: info.id.slice(0, 12) });
      return;
    }
    const kept = this.retained.get(info.id);
    this.retained.delete(info.id);
    const watch = new UpperLayerWatch({
      info,
      ignore: this.ignore,
      budget: this.budget,
      groupDepth: this.opts.groupDepth,
      emit: (ev) => this.emit(ev),
      canEmit: () => this.ctx.queue.length < this.ctx.queue.capacity * QUEUE_HIGH_WATER,
      onLimit: (w, reason) => this.onLimit(w, info, reason),
      baseline: kept?.upperDir === info.upperDir ? kept.baseline : undefined,
    });
    this.watches.set(info.id, watch);
    this.stats.watchesOpened++;
    watch.start();
  }

  private unwatch(id: string): void {
    const watch = this.watches.get(id);
    if (!watch) return;
    this.watches.delete(id);
    this.stats.unwatchedDirsClosed += watch.stats.unwatchedDirs;
    addCounts(this.closedTotals, watch.stats);
    const baseline = watch.close();
    this.stats.watchesClosed++;
    if (baseline.size === 0 || baseline.size > RETAINED_ENTRIES_MAX) return;
    this.retained.set(id, { upperDir: watch.upper, baseline });
    if (this.retained.size > RETAINED_CONTAINERS) this.retained.delete(this.retained.keys().next().value as string);
  }

  private onLimit(watch: UpperLayerWatch, info: ContainerInfo, reason: string): void {
    this.stats.limitNotices++;
    this.log.warn('file watch limit reached', { container: info.id.slice(0, 12), name: info.name, reason });
    const ev: AgentNoticeEvent = {
      kind: 'agent_notice',
      ts: Date.now(),
      containerId: watch.containerId,
      rule: 'sensor.file_watch_limit',
      severity: 'medium',
      message: `file sensor: ${reason}`,
      details: {
        watchedDirs: watch.stats.watchedDirs,
        totalWatchedDirs: this.budget.used,
        maxPerContainer: this.budget.perContainer,
        maxTotal: this.budget.total,
      },
    };
    this.push(ev);
  }

  private emit(ev: FileChangeEvent): void {
    const proc = this.ctx.processLookup?.(ev.containerId);
    if (proc) ev.process = proc;
    this.push(ev);
  }

  private push(ev: FileChangeEvent | AgentNoticeEvent): void {
    if (this.ctx.queue.push(ev)) this.stats.emitted++;
    else this.stats.dropped++;
  }
}

function addCounts(into: { ignored: number; errors: number; changesAfterStop: number; backpressureWaits: number }, s: UpperLayerWatchStats): void {
  into.ignored += s.ignored;
  into.errors += s.statErrors + s.watchErrors;
  into.changesAfterStop += s.afterStop;
  into.backpressureWaits += s.backpressureWaits;
}
