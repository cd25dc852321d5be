import { Minimatch } from 'minimatch';

/**
 * `sensors.file.ignore` compiled once. A glob ending in "/**" ignores a whole tree, its root included,
 * so the sensor neither reports nor watches it (saving inotify watches).
 */
export class IgnoreMatcher {
  private readonly paths: Minimatch[];
  private readonly trees: { root: Minimatch; below: Minimatch }[];

  constructor(globs: readonly string[]) {
    const opts = { dot: true };
    this.paths = globs.map((g) => new Minimatch(g, opts));
    this.trees = globs.filter((g) => g.endsWith('/**')).map((g) => ({ root: new Minimatch(g.slice(0, -3) || '/', opts), below: new Minimatch(g, opts) }));
  }

  /** Changes at this path (inside the container) are not reported. */
  ignores(file: string): boolean {
    return this.paths.some((m) => m.match(file)) || this.ignoresTree(file);
  }

  /** Nothing at or below this directory is reported, so it need not be watched. */
  ignoresTree(dir: string): boolean {
    return this.trees.some((t) => t.root.match(dir) || t.below.match(dir));
  }
}
