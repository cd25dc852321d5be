import path from 'node:path';
import type { Config } from './config/load.js';
import type { AgentNoticeEvent, ContainerInfo, RunwatchEvent, RunwatchRecord, Severity } from './events/types.js';
import type { Decider } from './engine/engine.js';
import { auditOnlyDecider } from './engine/audit-decider.js';
import { ImageHistory } from './engine/image-history.js';
import { loadRuleset } from './engine/rule-compiler.js';
import { newDecisionState, RulesDecider } from './engine/rules-decider.js';
import { RulesWatcher } from './engine/rules-watcher.js';
import { errorMessage, type RunwatchError } from './errors.js';
import type { Logger } from './log.js';
import { ContainerInventory } from './pipeline/container-inventory.js';
import { DockerClientRuns } from './pipeline/docker-client-runs.js';
import { EventQueue } from './pipeline/event-queue.js';
import { Pipeline } from './pipeline/pipeline.js';
import { createSensors } from './sensors/index.js';
import type { Sensor, SensorContext } from './sensors/sensor.js';
import { createSinks } from './sinks/index.js';
import type { Sink } from './sinks/sink.js';

export interface AgentOptions {
  config: Config;
  log: Logger;
  /** Extra sinks beside the configured ones (tests, learning mode). */
  extraSinks?: Sink[];
  onRecord?: (rec: RunwatchRecord) => void;
  /** Sees every event after enrichment, before it is decided (learning, shadow evaluation). */
  onEvent?: (ev: RunwatchEvent, container: ContainerInfo | undefined) => void;
  /** Wraps every decider the agent installs, hot-reloaded ones included (learning mutes its images' allowlist findings). */
  wrapDecider?: (d: Decider) => Decider;
}

interface Step {
  name: string;
  run: () => Promise<void> | void;
}

/**
 * The composition root. Start steps run in order; teardown steps all run, in order, even when one fails
 * or start-up stopped half way (Falco's run_steps / teardown_steps).
 */
export class Agent {
  readonly inventory = new ContainerInventory();
  /** Host `docker` CLI runs (from the process sensor), to name who is behind an admin action. */
  private readonly dockerClients = new DockerClientRuns();
  readonly queue: EventQueue;
  private pipeline!: Pipeline;
  private sinks: Sink[] = [];
  private sensors: Sensor[] = [];
  private decider: Decider = auditOnlyDecider;
  private rulesWatcher: RulesWatcher | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();
  private started = false;

  constructor(private readonly opts: AgentOptions) {
    this.queue = new EventQueue(opts.config.pipeline.queueCapacity);
  }

  private get log(): Logger {
    return this.opts.log;
  }

  async start(): Promise<void> {
    const { config } = this.opts;
    const steps: Step[] = [
      { name: 'rules', run: () => this.startRules() },
      {
        name: 'sinks',
        run: () => {
          this.sinks = [
            ...createSinks({
              config,
              log: this.log.child({ component: 'sinks' }),
              notify: (rule, message, details) => this.notice(rule, 'medium', message, details),
            }),
            ...(this.opts.extraSinks ?? []),
          ];
        },
      },
      {
        name: 'pipeline',
        run: () => {
          this.pipeline = new Pipeline({
            queue: this.queue,
            inventory: this.inventory,
            dockerClients: this.dockerClients,
            decider: () => this.decider,
            sinks: this.sinks,
            host: config.host,
            log: this.log.child({ component: 'pipeline' }),
            groupWindowMs: config.pipeline.groupWindowSeconds * 1000,
            onRecord: this.opts.onRecord,
            onEvent: this.opts.onEvent,
          });
          this.pipeline.start();
        },
      },
      {
        name: 'sensors',
        run: async () => {
          this.sensors = createSensors(config, { dockerClients: this.dockerClients });
          // One context for all: the process sensor sets processLookup on it for the sensors started after it.
          const ctx: SensorContext = { config, queue: this.queue, inventory: this.inventory, log: this.log, signal: this.abort.signal };
          for (const sensor of this.sensors) {
            await sensor.start(ctx);
            this.log.info('sensor started', { sensor: sensor.name, ...sensor.health().details });
          }
        },
      },
      {
        name: 'health',
        run: () => {
          this.healthTimer = setInterval(() => this.log.info('health', { health: JSON.stringify(this.health()) }), 60_000);
          this.healthTimer.unref();
        },
      },
    ];
    this.started = true;
    for (const step of steps) {
      this.log.debug('start step', { step: step.name });
      await step.run();
    }
    this.log.info('runwatch running', {
      host: config.host,
      containers: this.inventory.size,
      sensors: this.sensors.map((s) => s.name),
      sinks: this.sinks.map((s) => s.name),
    });
  }

  /** Stops sensors, drains the queue, flushes and closes sinks. Every step runs even if an earlier one failed. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    const teardown: Step[] = [
      { name: 'health', run: () => clearInterval(this.healthTimer) },
      { name: 'rules', run: () => this.rulesWatcher?.close() },
      {
        name: 'sensors',
        run: async () => {
          this.abort.abort();
          for (const s of [...this.sensors].reverse()) {
            try {
              await s.stop();
            } catch (err) {
              this.log.error('sensor stop failed', { sensor: s.name, error: errorMessage(err) });
            }
          }
        },
      },
      { name: 'pipeline', run: () => this.pipeline?.stop() },
      {
        name: 'sinks',
        run: async () => {
          for (const s of this.sinks) {
            try {
              await s.shutdown();
            } catch (err) {
              this.log.error('sink shutdown failed', { sink: s.name, error: errorMessage(err) });
            }
          }
        },
      },
    ];
    for (const step of teardown) {
      this.log.debug('teardown step', { step: step.name });
      try {
        await step.run();
      } catch (err) {
        this.log.error('teardown step failed', { step: step.name, error: errorMessage(err) });
      }
    }
  }

  /**
   * Loads the rules (fatal with every located error when they do not load) and, with rules.watch, reloads
   * them on change: a complete new ruleset is swapped in at once; a bad one keeps the last good ruleset.
   */
  private async startRules(): Promise<void> {
    const { config } = this.opts;
    const log = this.log.child({ component: 'rules' });
    const load = () =>
      loadRuleset(config.rules.paths, { defaults: { cpuHighPercent: config.metrics.cpuHighPercent, memoryHighPercent: config.metrics.memoryHighPercent } });
    const history = new ImageHistory({ file: path.join(config.stateDir, 'image-history.json'), log });
    let current = new RulesDecider(load(), newDecisionState(history));
    this.setDecider(current);
    log.info('rules loaded', { paths: [...config.rules.paths], ...current.ruleset.summary() });
    if (!config.rules.watch) return;
    this.rulesWatcher = new RulesWatcher({
      paths: config.rules.paths,
      debounceMs: config.rules.reloadDebounceMs,
      load,
      log,
      onReload: (ruleset, changed) => {
        current = current.withRuleset(ruleset);
        this.setDecider(current);
        log.info('rules reloaded', { changed: [...changed], ...ruleset.summary() });
      },
      onError: (errors: readonly RunwatchError[], changed) => {
        for (const e of errors)
          log.error('rules reload failed, keeping the last good rules', { error: e.format(), file: e.file, line: e.line, field: e.field });
        const first = errors[0];
        this.notice(
          'rules.reload_failed',
          'high',
          `Rules reload failed, the last good rules stay in force: ${first?.format() ?? 'unknown error'}${errors.length > 1 ? ` (and ${errors.length - 1} more)` : ''}`,
          {
            errors: errors.length,
            changed: changed.join(','),
            ...(first?.file !== undefined && { file: first.file }),
            ...(first?.line !== undefined && { line: first.line }),
            ...(first?.field !== undefined && { field: first.field }),
            ...(first && { code: first.code }),
          },
        );
      },
    });
    await this.rulesWatcher.start();
  }

  /** Swaps the decision logic (hot reload); takes effect with the next event. */
  setDecider(d: Decider): void {
    this.decider = this.opts.wrapDecider?.(d) ?? d;
  }

  /** Reopen file outputs (SIGHUP, for logrotate). */
  reopenOutputs(): void {
    for (const s of this.sinks) (s as { reopen?: () => void }).reopen?.();
  }

  /** Queues an audit record about the agent itself. */
  notice(rule: string, severity: Severity, message: string, details?: Record<string, string | number | boolean>): void {
    const ev: AgentNoticeEvent = { kind: 'agent_notice', ts: Date.now(), rule, severity, message, details };
    this.queue.push(ev);
  }

  health(): Record<string, unknown> {
    return {
      sensors: Object.fromEntries(this.sensors.map((s) => [s.name, s.health()])),
      pipeline: this.pipeline?.health(),
      containers: this.inventory.size,
    };
  }
}
