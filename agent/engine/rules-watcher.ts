import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { RunwatchError, RunwatchErrors } from '../errors.js';
import type { Logger } from '../log.js';
import { isRuleFile } from './rule-loader.js';
import type { Ruleset } from './ruleset.js';

export interface RulesWatcherOptions {
  paths: readonly string[];
  /** Changes within this many ms are taken together (editors write a file in several steps). */
  debounceMs: number;
  /** Builds a complete ruleset from the paths; throws RunwatchErrors when they do not load. */
  load: () => Ruleset;
  /** A new ruleset loaded without errors. */
  onReload: (ruleset: Ruleset, changed: readonly string[]) => void;
  /** The rules no longer load; the caller keeps the last good ruleset. */
  onError: (errors: readonly RunwatchError[], changed: readonly string[]) => void;
  log: Logger;
}

/** Watches rule files and folders and reloads the whole ruleset after a change has settled. */
export class RulesWatcher {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private changed = new Set<string>();
  readonly stats = { reloads: 0, failures: 0 };

  constructor(private readonly opts: RulesWatcherOptions) {}

  /** Resolves once the initial scan is done, so changes from then on are seen. */
  async start(): Promise<void> {
    const w = watch([...this.opts.paths], {
      ignoreInitial: true,
      atomic: true,
      // Only rule files count; folders must pass so that new files in them are seen.
      ignored: (p, stats) => stats?.isFile() === true && !isRuleFile(path.basename(p)),
    });
    this.watcher = w;
    w.on('all', (event, file) => {
      if (event === 'addDir') return;
      this.changed.add(file);
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.reload(), this.opts.debounceMs);
      this.timer.unref();
    });
    w.on('error', (err) => this.opts.log.warn('rule watcher error', { error: err instanceof Error ? err.message : String(err) }));
    await new Promise<void>((resolve) => w.once('ready', () => resolve()));
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    await this.watcher?.close();
    this.watcher = undefined;
  }

  private reload(): void {
    const changed = [...this.changed];
    this.changed.clear();
    let ruleset: Ruleset;
    try {
      ruleset = this.opts.load();
    } catch (err) {
      this.stats.failures++;
      const errors =
        err instanceof RunwatchErrors ? err.errors : [new RunwatchError('RW_RULE_READ', err instanceof Error ? err.message : String(err), {}, { cause: err })];
      this.opts.onError(errors, changed);
      return;
    }
    this.stats.reloads++;
    this.opts.onReload(ruleset, changed);
  }
}
