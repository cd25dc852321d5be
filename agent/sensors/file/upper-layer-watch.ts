import { readdirSync, readlinkSync, watch, type FSWatcher, type Stats } from 'node:fs';
import path from 'node:path';
import type { ContainerInfo, FileChangeEvent, FileOp } from '../../events/types.js';
import type { IgnoreMatcher } from './ignore-matcher.js';
import { containerPath, isWhiteout, lowerEntry, lstatOrUndefined } from './upper-layer.js';

/** inotify watches (one per directory) shared by all containers; the sensor owns it. */
export interface WatchBudget {
  perContainer: number;
  total: number;
  used: number;
}

type EntryKind = 'file' | 'dir' | 'symlink' | 'whiteout' | 'other';

/** What the sensor last saw of one name in the upper layer. */
export interface Entry {
  kind: EntryKind;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  nlink: number;
  linkTarget?: string;
}

interface DirNode {
  entries: Map<string, Entry>;
  watcher?: FSWatcher;
  /** Replaced wholesale in this container (created over a whiteout or hiding the image's directory): nothing below comes from the image. */
  opaque: boolean;
}

/** What a watch knew when its container stopped, keyed by path relative to the layer root; lets a restart report only differences. */
export type Baseline = Map<string, Entry>;

export interface UpperLayerWatchOptions {
  info: ContainerInfo;
  ignore: IgnoreMatcher;
  budget: WatchBudget;
  /** Directory levels kept in `pathPrefix`. */
  groupDepth: number;
  emit: (ev: FileChangeEvent) => void;
  /** False while the event queue is nearly full: work waits (the changes stay on disk and in `pending`) instead of being dropped. */
  canEmit: () => boolean;
  /** Called once, the first time a directory is left unwatched because a limit was reached. */
  onLimit: (watch: UpperLayerWatch, reason: string) => void;
  baseline?: Baseline;
}

export interface UpperLayerWatchStats {
  watchedDirs: number;
  /** Directories seen but not watched (limits, inotify out of watches): changes inside them are not seen. */
  unwatchedDirs: number;
  ignored: number;
  statErrors: number;
  watchErrors: number;
  /** Changes not reported because the container was already going away (its layer being unmounted/removed). */
  afterStop: number;
  /** Times handling paused because the event queue was nearly full. */
  backpressureWaits: number;
}

/** Entries handled per slice before yielding, so libuv keeps draining inotify (its kernel queue drops silently when full). */
const SLICE = 512;
/** Lets the several inotify events of one write (create, modify, attrib) collapse into one look at the file. */
const COALESCE_MS = 5;
const BACKPRESSURE_WAIT_MS = 20;
const SEP = '\0';

/**
 * Watches one container's overlay upper layer and reports what the container creates, modifies, deletes
 * and chmods, as paths inside the container.
 *
 * One non-recursive inotify watch (fs.watch) per directory, not per file. An event only names what to
 * look at: the change itself is found by lstat and compared with the last known state, so lost or merged
 * inotify events cost precision of timing, not correctness. A new directory is watched first and read
 * second, so files written into it before the watch existed are found by the read (`mkdir -p a/b/c &&
 * echo x > a/b/c/f`). Create vs modify is told by looking the name up in the image's lower layers.
 */
export class UpperLayerWatch {
  readonly containerId: string;
  readonly stats: UpperLayerWatchStats = {
    watchedDirs: 0,
    unwatchedDirs: 0,
    ignored: 0,
    statErrors: 0,
    watchErrors: 0,
    afterStop: 0,
    backpressureWaits: 0,
  };
  private readonly upperDir: string;
  private readonly lowerDirs: readonly string[];
  private readonly dirs = new Map<string, DirNode>();
  /** relDir + SEP + name → found by a scan (true) or by a live event (false). */
  private readonly pending = new Map<string, boolean>();
  private readonly scans = new Map<string, boolean>();
  /** Inode → paths, for files with more than one link, so a hard link can name the other path. */
  private readonly links = new Map<number, string[]>();
  /** Hard links whose other path was not known yet; reported once the current burst is handled (the copy-up of the other path may still be queued). */
  private unresolvedLinks: { ev: FileChangeEvent; ino: number; rel: string }[] = [];
  /** Mount destinations (never written through the layer) and their parents: Docker makes these, not the container. */
  private readonly mountPaths: Set<string>;
  private readonly mountPoints: Set<string>;
  private readonly mergedMountedAtStart: boolean;
  private baseline: Baseline | undefined;
  private timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private idleWaiters: (() => void)[] = [];
  private closed = false;
  private limitReported = false;

  constructor(private readonly opts: UpperLayerWatchOptions) {
    const { info } = opts;
    if (!info.upperDir) throw new Error('container has no overlay upper layer');
    this.containerId = info.id;
    this.upperDir = info.upperDir;
    this.lowerDirs = info.lowerDirs ?? [];
    this.baseline = opts.baseline;
    this.mountPoints = new Set(info.mounts.map((m) => path.posix.normalize(m.destination)));
    this.mountPaths = new Set(info.mounts.flatMap((m) => ancestorsAndSelf(m.destination)));
    this.mergedMountedAtStart = isMountPoint(info.mergedDir);
  }

  /** Watches the layer root and queues the first full read; changes found by it are marked `discovered`. */
  start(): void {
    const root: DirNode = { entries: new Map(), opaque: false };
    this.dirs.set('', root);
    this.watchDir('', root, true);
  }

  /** Resolves once nothing is queued (the first full read is done, or the latest burst handled). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Closes every watch; returns what it knew, for a later restart of the same container. */
  close(): Baseline {
    if (this.closed) return new Map();
    this.closed = true;
    this.clearTimer();
    const baseline: Baseline = new Map();
    for (const [rel, node] of this.dirs) {
      this.unwatch(node);
      for (const [name, e] of node.entries) baseline.set(join(rel, name), e);
    }
    this.reportUnresolvedLinks();
    this.dirs.clear();
    this.pending.clear();
    this.scans.clear();
    this.notifyIdle();
    return baseline;
  }

  get upper(): string {
    return this.upperDir;
  }

  /** Looks at every watched directory again, reporting only real differences (after inotify may have dropped events). */
  rescan(): void {
    if (this.closed) return;
    for (const [rel, node] of this.dirs) if (node.watcher) this.scans.set(rel, false);
    this.schedule();
  }

  private watchDir(rel: string, node: DirNode, discovered: boolean): void {
    const { budget } = this.opts;
    const full =
      this.stats.watchedDirs >= budget.perContainer
        ? 'sensors.file.maxWatchedDirsPerContainer'
        : budget.used >= budget.total
          ? 'sensors.file.maxWatchedDirsTotal'
          : undefined;
    if (full) return this.leaveUnwatched(rel, `${full} reached`);
    try {
      node.watcher = watch(path.join(this.upperDir, rel), { persistent: false }, (_type, name) => this.onFsEvent(rel, name));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return void this.dirs.delete(rel);
      this.stats.watchErrors++;
      return this.leaveUnwatched(rel, code === 'ENOSPC' ? 'inotify watches exhausted (fs.inotify.max_user_watches)' : `watch failed: ${code ?? String(err)}`);
    }
    node.watcher.on('error', () => this.stats.watchErrors++);
    this.stats.watchedDirs++;
    budget.used++;
    // Watch first, read second: whatever lands in the directory between the two is caught by one or the other.
    this.scans.set(rel, discovered);
    this.schedule();
  }

  private leaveUnwatched(rel: string, reason: string): void {
    this.dirs.delete(rel);
    this.stats.unwatchedDirs++;
    if (!this.limitReported) {
      this.limitReported = true;
      this.opts.onLimit(this, `${reason}; changes below ${containerPath(rel)} and other unwatched directories are not seen`);
    }
  }

  private unwatch(node: DirNode): void {
    if (!node.watcher) return;
    node.watcher.close();
    node.watcher = undefined;
    this.stats.watchedDirs--;
    this.opts.budget.used--;
  }

  private onFsEvent(rel: string, name: string | Buffer | null): void {
    if (this.closed) return;
    if (name === null) this.scans.set(rel, false);
    else this.pending.set(rel + SEP + name.toString(), false);
    this.schedule();
  }

  private schedule(): void {
    if (!this.timer && !this.closed) this.timer = setTimeout(() => this.flush(), COALESCE_MS);
  }

  private clearTimer(): void {
    if (!this.timer) return;
    clearTimeout(this.timer as NodeJS.Timeout);
    clearImmediate(this.timer as NodeJS.Immediate);
    this.timer = undefined;
  }

  private flush(): void {
    this.timer = undefined;
    if (!this.opts.canEmit()) {
      this.stats.backpressureWaits++;
      this.timer = setTimeout(() => this.flush(), BACKPRESSURE_WAIT_MS);
      return;
    }
    let budget = SLICE;
    while (budget > 0 && !this.closed) {
      if (this.pending.size) {
        const batch: [string, boolean][] = [];
        for (const item of this.pending) {
          batch.push(item);
          this.pending.delete(item[0]);
          if (batch.length >= budget) break;
        }
        budget -= batch.length;
        this.handleBatch(batch);
      } else if (this.scans.size) {
        const [rel, discovered] = this.scans.entries().next().value as [string, boolean];
        this.scans.delete(rel);
        budget -= this.scanDir(rel, discovered);
      } else break;
    }
    if (this.isIdle()) {
      this.baseline = undefined; // only the first full read compares with the previous run
      this.reportUnresolvedLinks();
      this.notifyIdle();
    } else if (!this.closed) {
      this.timer = setImmediate(() => this.flush());
    }
  }

  private isIdle(): boolean {
    return this.closed || (this.pending.size === 0 && this.scans.size === 0);
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Queues every name in the directory now, and every name it had before, to be looked at. Returns the work done. */
  private scanDir(rel: string, discovered: boolean): number {
    const node = this.dirs.get(rel);
    if (!node) return 1;
    let names: string[] = [];
    try {
      names = readdirSync(rel ? `${this.upperDir}/${rel}` : this.upperDir);
    } catch {
      // Gone already: the parent's event reports it.
    }
    const prefix = rel + SEP;
    for (const name of [...names, ...node.entries.keys()]) if (!this.pending.has(prefix + name)) this.pending.set(prefix + name, discovered);
    return 1 + Math.ceil(names.length / 16);
  }

  private handleBatch(batch: [string, boolean][]): void {
    // Look at everything first, so hard links made in the same burst can name each other.
    const seen: { rel: string; node: DirNode; name: string; st: Stats | undefined; discovered: boolean }[] = [];
    for (const [key, discovered] of batch) {
      const sep = key.indexOf(SEP);
      const rel = key.slice(0, sep);
      const node = this.dirs.get(rel);
      if (!node) continue;
      const name = key.slice(sep + 1);
      let st: Stats | undefined;
      try {
        st = lstatOrUndefined(this.abs(rel, name));
      } catch {
        this.stats.statErrors++;
        continue;
      }
      if (st && st.nlink > 1 && !st.isDirectory() && !isWhiteout(st)) this.addLink(st.ino, join(rel, name));
      seen.push({ rel, node, name, st, discovered });
    }
    let live: boolean | undefined;
    for (const s of seen) {
      if (this.dirs.get(s.rel) !== s.node) continue; // its directory went away earlier in this batch
      const prev = s.node.entries.get(s.name);
      if (!s.st && prev && prev.kind !== 'whiteout') {
        // A vanished name means a delete only while the container runs; Docker removing the layer is not one.
        live ??= this.containerLive();
        if (!live) {
          this.stats.afterStop++;
          continue;
        }
      }
      this.diff(s.rel, s.node, s.name, s.st, s.discovered);
    }
  }

  private diff(dir: string, node: DirNode, name: string, st: Stats | undefined, discovered: boolean): void {
    const rel = join(dir, name);
    const prev = node.entries.get(name);
    if (!st) {
      if (!prev) return;
      node.entries.delete(name);
      this.forget(rel, prev);
      if (prev.kind !== 'whiteout') this.report('delete', rel, undefined, Date.now(), discovered);
      return;
    }
    const cur = this.toEntry(st, rel);
    node.entries.set(name, cur);
    if (!prev) return this.appeared(rel, cur, st, discovered, false);
    if (prev.kind !== cur.kind || (cur.kind === 'dir' && prev.ino !== cur.ino)) {
      this.forget(rel, prev);
      return this.appeared(rel, cur, st, discovered, true);
    }
    if (cur.kind === 'whiteout') return;
    const ts = Math.floor(st.ctimeMs);
    if (cur.kind !== 'dir' && contentDiffers(prev, cur)) this.report('modify', rel, cur, ts, discovered);
    if (metaDiffers(prev, cur)) this.report('chmod', rel, cur, ts, discovered, prev);
  }

  /** A name new to this watch (or one whose type changed, `replaced`): create, or a copy-up of the image's file. */
  private appeared(rel: string, cur: Entry, st: Stats, discovered: boolean, replaced: boolean): void {
    const ts = Math.floor(st.ctimeMs);
    if (cur.kind === 'whiteout') return this.report('delete', rel, undefined, Date.now(), discovered);
    const before = this.baseline?.get(rel);
    // A directory's size and mtime follow its content, which is compared name by name.
    const unchangedSinceLastRun =
      before !== undefined &&
      before.kind === cur.kind &&
      !metaDiffers(before, cur) &&
      (cur.kind === 'dir' ? before.ino === cur.ino : !contentDiffers(before, cur));
    const lower = this.fromImage(rel) ? lowerEntry(this.lowerDirs, rel) : undefined;
    if (cur.kind === 'dir') {
      const lowerDir = lower?.isDirectory() === true;
      const opaque = replaced || (lowerDir && this.hidesImageDir(rel));
      const where = containerPath(rel);
      if (!this.mountPoints.has(where) && !this.opts.ignore.ignoresTree(where)) {
        const node: DirNode = { entries: new Map(), opaque };
        this.dirs.set(rel, node);
        this.watchDir(rel, node, discovered);
      }
      if (unchangedSinceLastRun) return;
      if (!lowerDir || opaque) this.report('create', rel, cur, ts, discovered);
      else if (metaDiffers(statEntry(lower), cur)) this.report('chmod', rel, cur, ts, discovered, statEntry(lower));
      return;
    }
    if (unchangedSinceLastRun) return;
    if (!lower || replaced) return this.report('create', rel, cur, ts, discovered);
    const image = statEntry(lower, lower.isSymbolicLink() ? readLink(this.lowerDirs, rel) : undefined);
    const meta = metaDiffers(image, cur);
    // A copy-up with no visible difference was still opened for writing.
    if (!meta || dataDiffers(image, cur) || image.kind !== cur.kind) this.report('modify', rel, cur, ts, discovered);
    if (meta) this.report('chmod', rel, cur, ts, discovered, image);
  }

  /** Whether names below `rel` can come from the image: not when a directory on the way was replaced in this container. */
  private fromImage(rel: string): boolean {
    for (let i = rel.indexOf('/'); i > 0; i = rel.indexOf('/', i + 1)) if (this.dirs.get(rel.slice(0, i))?.opaque) return false;
    return this.lowerDirs.length > 0;
  }

  /**
   * Whether the upper directory is opaque (trusted.overlay.opaque: the image's directory of that name was
   * removed and made anew). Node cannot read xattrs, so ask the mounted overlay: a name the image has there,
   * absent from the upper layer and yet missing from the merged view, is hidden by an opaque directory.
   */
  private hidesImageDir(rel: string): boolean {
    const merged = this.opts.info.mergedDir;
    if (!merged || !this.mergedMountedAtStart) return false;
    for (const layer of this.lowerDirs) {
      let names;
      try {
        names = readdirSync(path.join(layer, rel), { withFileTypes: true });
      } catch {
        continue;
      }
      for (const d of names) {
        if (d.isCharacterDevice()) continue;
        try {
          if (lstatOrUndefined(path.join(this.upperDir, rel, d.name))) continue;
          return !lstatOrUndefined(path.join(merged, rel, d.name));
        } catch {
          return false;
        }
      }
      return false;
    }
    return false;
  }

  private containerLive(): boolean {
    if (!lstatOrUndefined(this.upperDir)) return false;
    return !this.mergedMountedAtStart || isMountPoint(this.opts.info.mergedDir);
  }

  /** Drops what was known below a name that vanished or changed type. */
  private forget(rel: string, prev: Entry): void {
    if (prev.nlink > 1) this.dropLink(prev.ino, rel);
    if (prev.kind !== 'dir') return;
    const node = this.dirs.get(rel);
    if (!node) return;
    this.dirs.delete(rel);
    this.unwatch(node);
    for (const [name, e] of node.entries) this.forget(join(rel, name), e);
  }

  private addLink(ino: number, rel: string): void {
    const paths = this.links.get(ino);
    if (!paths) this.links.set(ino, [rel]);
    else if (!paths.includes(rel)) paths.push(rel);
  }

  private dropLink(ino: number, rel: string): void {
    const paths = this.links.get(ino)?.filter((p) => p !== rel);
    if (paths?.length) this.links.set(ino, paths);
    else this.links.delete(ino);
  }

  /** Host path of a name in a directory of the layer; plain concatenation, names never contain "/". */
  private abs(dir: string, name: string): string {
    return dir ? `${this.upperDir}/${dir}/${name}` : `${this.upperDir}/${name}`;
  }

  private toEntry(st: Stats, rel: string): Entry {
    return statEntry(st, st.isSymbolicLink() ? readLink([this.upperDir], rel) : undefined);
  }

  /** `before` is the entry a chmod changed (the known one, or the image's at a copy-up). */
  private report(op: FileOp, rel: string, e: Entry | undefined, ts: number, discovered: boolean, before?: Entry): void {
    const where = containerPath(rel);
    if (this.opts.ignore.ignores(where)) {
      this.stats.ignored++;
      return;
    }
    if (op === 'create' && this.mountPaths.has(where)) return;
    const ev: FileChangeEvent = {
      kind: 'file_change',
      ts,
      containerId: this.containerId,
      path: where,
      op,
      pathPrefix: pathPrefix(where, this.opts.groupDepth),
    };
    if (e) {
      ev.mode = e.mode;
      if (before) {
        ev.previousMode = before.mode;
        if (before.uid !== e.uid || before.gid !== e.gid) ev.owner = { uid: e.uid, gid: e.gid, previousUid: before.uid, previousGid: before.gid };
      }
      if (e.linkTarget !== undefined) ev.linkTarget = e.linkTarget;
      if (e.nlink > 1 && e.kind !== 'dir') {
        ev.nlink = e.nlink;
        const other = this.otherLink(e.ino, rel);
        if (other === undefined) {
          if (discovered) ev.discovered = true;
          this.unresolvedLinks.push({ ev, ino: e.ino, rel });
          return;
        }
        ev.linkTarget = other;
      }
    }
    if (discovered) ev.discovered = true;
    this.opts.emit(ev);
  }

  private otherLink(ino: number, rel: string): string | undefined {
    const other = this.links.get(ino)?.find((p) => p !== rel);
    return other === undefined ? undefined : containerPath(other);
  }

  private reportUnresolvedLinks(): void {
    const waiting = this.unresolvedLinks;
    this.unresolvedLinks = [];
    for (const { ev, ino, rel } of waiting) {
      const other = this.otherLink(ino, rel);
      if (other !== undefined) ev.linkTarget = other;
      this.opts.emit(ev);
    }
  }
}

function join(dir: string, name: string): string {
  return dir ? `${dir}/${name}` : name;
}

/** The directory a change is grouped under: its parent, cut to `depth` levels ("/" for top-level names). */
export function pathPrefix(file: string, depth: number): string {
  const parentEnd = file.lastIndexOf('/');
  let end = 0;
  for (let level = 0; level < depth; level++) {
    const next = file.indexOf('/', end + 1);
    if (next < 0 || next > parentEnd) return parentEnd === 0 ? '/' : file.slice(0, parentEnd);
    end = next;
  }
  return end === 0 ? '/' : file.slice(0, end);
}

function statEntry(st: Stats, linkTarget?: string): Entry {
  const kind: EntryKind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : isWhiteout(st) ? 'whiteout' : 'other';
  const e: Entry = { kind, ino: st.ino, mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, mtimeMs: st.mtimeMs, nlink: st.nlink };
  if (linkTarget !== undefined) e.linkTarget = linkTarget;
  return e;
}

function contentDiffers(a: Entry, b: Entry): boolean {
  return a.ino !== b.ino || dataDiffers(a, b);
}

/** Size, modification time or link target; what a copy-up keeps when the container only changed metadata. */
function dataDiffers(a: Entry, b: Entry): boolean {
  return a.size !== b.size || a.mtimeMs !== b.mtimeMs || a.linkTarget !== b.linkTarget;
}

/** Mode bits (setuid included) or ownership. */
function metaDiffers(a: Entry, b: Entry): boolean {
  return a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid;
}

function readLink(layers: readonly string[], rel: string): string {
  for (const layer of layers) {
    try {
      return readlinkSync(path.join(layer, rel));
    } catch {
      // Not a link in this layer.
    }
  }
  return '';
}

function ancestorsAndSelf(p: string): string[] {
  const out: string[] = [];
  for (let cur = path.posix.normalize(p); cur !== '/' && cur !== '.'; cur = path.posix.dirname(cur)) out.push(cur);
  return out;
}

/** A mounted directory has another device than its parent. */
function isMountPoint(dir: string | undefined): boolean {
  if (!dir) return false;
  try {
    const here = lstatOrUndefined(dir);
    const parent = lstatOrUndefined(path.dirname(dir));
    return Boolean(here && parent && here.dev !== parent.dev);
  } catch {
    return false;
  }
}
