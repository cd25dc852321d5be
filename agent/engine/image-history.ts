import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';
import type { ImageSighting } from './engine.js';

export interface ImageHistoryOptions {
  /** JSON file the history survives restarts in; undefined keeps it in memory only (rule tests). */
  file?: string;
  log: Logger;
  /** Tags remembered at most; past it the least recently changed are forgotten. */
  maxTags?: number;
}

interface HistoryFile {
  version: 1;
  tags: Record<string, ImageSighting>;
}

/**
 * Which image each tag ran on this host, so that `image.digest_changed` can tell when a tag starts
 * running something else. Kept outside the pure decide: the RulesDecider looks a tag up before deciding
 * and records it after. Written (atomically, by rename) only when a tag is new or changes image, which is
 * at most once per container start.
 */
export class ImageHistory {
  private readonly tags = new Map<string, ImageSighting>();
  private readonly maxTags: number;
  readonly stats = { writes: 0, writeErrors: 0 };

  constructor(private readonly opts: ImageHistoryOptions) {
    this.maxTags = opts.maxTags ?? 10_000;
    if (opts.file) this.load(opts.file);
  }

  get size(): number {
    return this.tags.size;
  }

  get(tag: string): ImageSighting | undefined {
    return this.tags.get(tag);
  }

  /** Records that `tag` runs `imageId` as of `at` (epoch ms). */
  record(tag: string, imageId: string, digest: string | undefined, at: number): void {
    const known = this.tags.get(tag);
    if (known && known.imageId === imageId) return;
    const sighting: ImageSighting = { imageId, since: new Date(at).toISOString() };
    if (digest) sighting.digest = digest;
    this.tags.delete(tag);
    this.tags.set(tag, sighting);
    while (this.tags.size > this.maxTags) this.tags.delete(this.tags.keys().next().value as string);
    this.save();
  }

  private load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.opts.log.warn('image history unreadable, starting empty', { file, error: (err as NodeJS.ErrnoException).code ?? String(err) });
      return;
    }
    try {
      const parsed = JSON.parse(text) as HistoryFile;
      if (parsed.version !== 1 || typeof parsed.tags !== 'object') throw new Error(`unknown format version ${String(parsed.version)}`);
      for (const [tag, s] of Object.entries(parsed.tags)) if (typeof s?.imageId === 'string' && typeof s.since === 'string') this.tags.set(tag, s);
    } catch (err) {
      this.opts.log.warn('image history corrupt, starting empty', { file, error: err instanceof Error ? err.message : String(err) });
    }
  }

  private save(): void {
    const file = this.opts.file;
    if (!file) return;
    const body: HistoryFile = { version: 1, tags: Object.fromEntries(this.tags) };
    const tmp = `${file}.tmp`;
    try {
      ensureDir(path.dirname(file));
      writeFileSync(tmp, JSON.stringify(body) + '\n');
      renameSync(tmp, file);
      this.stats.writes++;
    } catch (err) {
      this.stats.writeErrors++;
      if (this.stats.writeErrors === 1 || this.stats.writeErrors % 100 === 0) {
        this.opts.log.error('image history not saved; image.digest_changed will not survive a restart', {
          file,
          error: (err as NodeJS.ErrnoException).code ?? String(err),
          failures: this.stats.writeErrors,
        });
      }
    }
  }
}

/**
 * mkdir -p bounded by the path's depth: Node's recursive mkdir retries forever where mkdir keeps
 * failing with ENOENT under an existing parent (e.g. below /proc).
 */
function ensureDir(dir: string): void {
  try {
    mkdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    const parent = path.dirname(dir);
    if (code !== 'ENOENT' || parent === dir) throw err;
    ensureDir(parent);
    mkdirSync(dir);
  }
}
