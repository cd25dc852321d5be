import Docker from 'dockerode';
import type { ContainerInfo, ContainerLifecycleAction, ContainerLifecycleEvent, RunwatchEvent } from '../../events/types.js';
import { RunwatchError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { toContainerRef } from '../../pipeline/container-inventory.js';
import type { Sensor, SensorContext, SensorHealth } from '../sensor.js';
import { toContainerInfo, type ImageFacts } from './container-info.js';
import { classify, eventKey, isDockerEventMessage, type DockerEventMessage } from './docker-events.js';

export interface DockerSensorOptions {
  socketPath: string;
  waitForDaemon: boolean;
  reconnectInitialDelayMs: number;
  reconnectMaxDelayMs: number;
}

/**
 * Keeps the container inventory current and turns Docker's event stream into lifecycle and admin-action
 * events. Nothing is lost across a broken stream: it reconnects with backoff, replays from the last event
 * it handled (de-duplicated), then lists and reconciles, since a restarted daemon has forgotten its history.
 */
export class DockerSensor implements Sensor {
  readonly name = 'docker' as const;
  private docker: Docker;
  private ctx!: SensorContext;
  private log!: Logger;
  private stopped = false;
  private stream: NodeJS.ReadableStream | undefined;
  private followLoop: Promise<void> | undefined;
  /** Events are handled one at a time, in stream order (handlers inspect asynchronously). */
  private chain: Promise<void> = Promise.resolve();
  private lastTimeNano = 0;
  private readonly seen = new Map<string, number>();
  private readonly imageFacts = new Map<string, ImageFacts>();
  private wake: (() => void) | undefined;
  private readonly stats = { emitted: 0, dropped: 0, reconnects: 0, malformed: 0, replayed: 0, duplicates: 0, synthesized: 0, handlerErrors: 0 };
  private state: SensorHealth['state'] = 'stopped';
  private lastError: string | undefined;

  constructor(private readonly opts: DockerSensorOptions) {
    this.docker = new Docker({ socketPath: opts.socketPath });
  }

  async start(ctx: SensorContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log.child({ sensor: 'docker' });
    this.state = 'starting';
    this.stopped = false;
    await this.waitForDaemon();
    // Take "now" before listing so that events racing with the listing are replayed, not missed.
    this.lastTimeNano = Date.now() * 1e6;
    await this.reconcile(true);
    this.state = 'running';
    this.followLoop = this.follow();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    this.destroyStream();
    await this.followLoop;
    await this.chain;
    this.state = 'stopped';
  }

  health(): SensorHealth {
    const { emitted, dropped, ...details } = this.stats;
    return { state: this.state, lastError: this.lastError, emitted, dropped, details: { ...details, containers: this.ctx?.inventory.size ?? 0 } };
  }

  private async waitForDaemon(): Promise<void> {
    let delay = this.opts.reconnectInitialDelayMs;
    for (;;) {
      try {
        await this.docker.ping();
        return;
      } catch (err) {
        const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        if (!this.opts.waitForDaemon) {
          throw new RunwatchError(
            'RW_DOCKER_UNREACHABLE',
            `cannot reach the Docker daemon at ${this.opts.socketPath} (${reason}); start dockerd or set docker.waitForDaemon: true`,
            { field: 'docker.socket' },
            { cause: err },
          );
        }
        this.lastError = `daemon unreachable: ${reason}`;
        this.log.warn('waiting for the Docker daemon', { socket: this.opts.socketPath, error: reason, retryMs: delay });
        await this.sleep(delay);
        if (this.stopped) throw new RunwatchError('RW_DOCKER_UNREACHABLE', 'stopped while waiting for the Docker daemon');
        delay = Math.min(delay * 2, this.opts.reconnectMaxDelayMs);
      }
    }
  }

  private async follow(): Promise<void> {
    let delay = this.opts.reconnectInitialDelayMs;
    let first = true;
    while (!this.stopped) {
      try {
        if (!first) {
          await this.docker.ping();
          const until = Date.now() / 1000;
          await this.readStream({ since: this.sinceArg(), until: until.toFixed(3) });
          await this.chain;
          await this.reconcile(false);
          this.state = 'running';
          this.log.info('reconnected to the Docker daemon', { reconnects: this.stats.reconnects });
          delay = this.opts.reconnectInitialDelayMs;
        }
        first = false;
        await this.readStream({ since: this.sinceArg() });
        if (this.stopped) break;
        throw new Error('event stream ended');
      } catch (err) {
        if (this.stopped) break;
        this.state = 'degraded';
        this.lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        this.stats.reconnects++;
        this.log.warn('Docker event stream lost, reconnecting', { error: this.lastError, retryMs: delay });
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.opts.reconnectMaxDelayMs);
      }
    }
  }

  /** Docker takes fractional seconds; replay the whole second of the last event and de-duplicate. */
  private sinceArg(): string {
    return String(Math.floor(this.lastTimeNano / 1e9));
  }

  /** Reads one events stream until it ends (bounded replay with `until`) or breaks. */
  private async readStream(query: { since: string; until?: string }): Promise<void> {
    const stream = await this.docker.getEvents(query as unknown as Docker.GetEventsOptions);
    const replay = query.until !== undefined;
    if (!replay) this.stream = stream;
    // stop() may have run while the request was in flight, before there was a stream to destroy.
    if (this.stopped) {
      (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
      return;
    }
    let buffered = '';
    await new Promise<void>((resolve, reject) => {
      stream.on('data', (chunk: Buffer | string) => {
        buffered += chunk.toString();
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line) this.onLine(line, replay);
        }
      });
      stream.on('end', () => resolve());
      stream.on('close', () => resolve());
      stream.on('error', (err: Error) => reject(err));
    });
    if (!replay) this.stream = undefined;
  }

  private onLine(line: string, replay: boolean): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      msg = undefined;
    }
    if (!isDockerEventMessage(msg)) {
      this.stats.malformed++;
      if (this.stats.malformed <= 10 || this.stats.malformed % 1000 === 0)
        this.log.warn('malformed Docker event ignored', { count: this.stats.malformed, line: line.slice(0, 200) });
      return;
    }
    const key = eventKey(msg);
    if (this.seen.has(key)) {
      this.stats.duplicates++;
      return;
    }
    this.seen.set(key, msg.timeNano);
    if (replay) this.stats.replayed++;
    if (msg.timeNano > this.lastTimeNano) this.lastTimeNano = msg.timeNano;
    this.pruneSeen();
    const m = msg;
    this.chain = this.chain.then(() =>
      this.handle(m).catch((err: unknown) => {
        this.stats.handlerErrors++;
        this.log.warn('Docker event handling failed', { action: m.Action, id: m.Actor.ID.slice(0, 12), error: String(err) });
      }),
    );
  }

  private pruneSeen(): void {
    if (this.seen.size < 4096) return;
    const horizon = this.lastTimeNano - 10e9;
    for (const [k, t] of this.seen) if (t < horizon) this.seen.delete(k);
  }

  private async handle(m: DockerEventMessage): Promise<void> {
    const ts = Math.floor(m.timeNano / 1e6);
    for (const c of classify(m)) {
      if (c.type === 'lifecycle') await this.onLifecycle(c.action, c.containerId, ts, { exitCode: c.exitCode });
      else if (c.type === 'action') {
        const ev: RunwatchEvent = { ...c.event, ts };
        if (ev.containerId && !this.ctx.inventory.get(ev.containerId)) {
          const info = await this.inspect(ev.containerId);
          if (info) ev.container = toContainerRef(info);
        }
        this.emit(ev);
      }
    }
  }

  private async onLifecycle(
    action: ContainerLifecycleAction,
    id: string,
    ts: number,
    extra: { exitCode?: number; synthesized?: boolean; discovered?: boolean; info?: ContainerInfo },
  ): Promise<void> {
    const { inventory } = this.ctx;
    let info = extra.info;
    switch (action) {
      case 'create':
      case 'start':
      case 'restart':
      case 'pause':
      case 'unpause':
      case 'rename':
      case 'update':
        info ??= await this.inspect(id);
        if (info?.running) inventory.upsert(info);
        else if (info && action !== 'create') inventory.remove(id, ts);
        break;
      case 'die':
      case 'stop':
      case 'destroy':
        info = inventory.remove(id, ts) ?? inventory.get(id) ?? info;
        break;
    }
    const ev: ContainerLifecycleEvent = { kind: 'container', ts, action, containerId: id };
    if (info) ev.info = info;
    if (extra.exitCode !== undefined && !Number.isNaN(extra.exitCode)) ev.exitCode = extra.exitCode;
    if (extra.synthesized) ev.synthesized = true;
    if (extra.discovered) ev.discovered = true;
    this.emit(ev);
  }

  /**
   * Lists running containers and brings the inventory in line: new or restarted ones are inspected and
   * announced, vanished ones get a synthesized stop (or destroy when the daemon no longer knows them).
   */
  private async reconcile(initial: boolean): Promise<void> {
    const listed = await this.docker.listContainers({ all: false });
    const running = new Set(listed.map((c) => c.Id));
    const now = Date.now();
    for (const known of this.ctx.inventory.list()) {
      if (running.has(known.id)) continue;
      const info = await this.inspect(known.id);
      this.stats.synthesized++;
      await this.onLifecycle(info ? 'stop' : 'destroy', known.id, now, { synthesized: true, info: info ?? known });
    }
    for (const c of listed) {
      const known = this.ctx.inventory.get(c.Id);
      const info = await this.inspect(c.Id);
      if (!info?.running) continue;
      if (known && this.ctx.inventory.isLive(c.Id) && known.startedAt === info.startedAt) continue;
      if (!initial) this.stats.synthesized++;
      await this.onLifecycle('start', c.Id, initial ? now : Date.parse(info.startedAt ?? '') || now, { synthesized: !initial, discovered: initial, info });
    }
  }

  private async inspect(id: string): Promise<ContainerInfo | undefined> {
    let raw: Docker.ContainerInspectInfo;
    try {
      raw = await this.docker.getContainer(id).inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
    return toContainerInfo(raw, await this.image(raw.Image));
  }

  private async image(imageId: string): Promise<ImageFacts | undefined> {
    const cached = this.imageFacts.get(imageId);
    if (cached) return cached;
    try {
      const img = await this.docker.getImage(imageId).inspect();
      const facts: ImageFacts = { repoDigests: img.RepoDigests ?? [], created: img.Created, user: img.Config?.User ?? '' };
      if (this.imageFacts.size > 1000) this.imageFacts.clear();
      this.imageFacts.set(imageId, facts);
      return facts;
    } catch {
      return undefined;
    }
  }

  private emit(ev: RunwatchEvent): void {
    if (this.ctx.queue.push(ev)) this.stats.emitted++;
    else this.stats.dropped++;
  }

  private destroyStream(): void {
    const s = this.stream as (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
    s?.destroy?.();
    this.stream = undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
