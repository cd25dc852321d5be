import { Minimatch } from 'minimatch';

/**
 * `sensors.file.ignore` compiled once to regular expressions (matched per reported change, so cheaper
 * than Minimatch#match, which splits the path each time). A glob ending in "/**" ignores a whole tree,
 * its root included, so the sensor neither reports nor watches it (saving inotify watches).
 */
export class IgnoreMatcher {
  private readonly paths: RegExp[];
  private readonly trees: RegExp[];

  constructor(globs: readonly string[]) {
    const re = (glob: string) => new Minimatch(glob, { dot: true }).makeRe() || /$^/;
    this.paths = globs.map(re);
    this.trees = globs.filter((g) => g.endsWith('/**')).flatMap((g) => [re(g.slice(0, -3) || '/'), re(g)]);
  }

  /** Changes at this path (inside the container) are not reported. */
  ignores(file: string): boolean {
    return this.paths.some((r) => r.test(file)) || this.ignoresTree(file);
  }

  /** Nothing at or below this directory is reported, so it need not be watched. */
  ignoresTree(dir: string): boolean {
    return this.trees.some((r) => r.test(dir));
  }
}
