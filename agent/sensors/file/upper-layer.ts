import { lstatSync, type Stats } from 'node:fs';
import path from 'node:path';
import type { ContainerInfo } from '../../events/types.js';

/** An overlayfs whiteout: a character device 0/0 standing for a name deleted from the layers below. */
export function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/** lstat that answers undefined for a missing path, including one whose parent is not a directory (ENOTDIR). */
export function lstatOrUndefined(file: string): Stats | undefined {
  try {
    return lstatSync(file, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** Path inside the container for a path relative to the layer root ("" is the root). */
export function containerPath(rel: string): string {
  return `/${rel}`;
}

/**
 * Whether `file` (absolute, inside the container) exists in the container's writable layer, i.e. was
 * written or changed after the container started; the answer `process.drift` needs. One lstat for the
 * common "no" answer. A "yes" is confirmed by checking that no ancestor in the upper layer is a symlink,
 * because lstat on the host would follow it out of the layer (e.g. a container-made /tmp/x -> /).
 * Whiteouts (deleted names) count as absent.
 */
export function isInUpperLayer(info: Pick<ContainerInfo, 'upperDir'>, file: string): boolean {
  const upper = info.upperDir;
  if (!upper || file[0] !== '/') return false;
  const clean = /\/\.{0,2}(\/|$)|\/\//.test(file) ? path.posix.normalize(file) : file;
  if (clean === '/') return false;
  let st: Stats | undefined;
  try {
    st = lstatOrUndefined(upper + clean);
  } catch {
    return false;
  }
  if (!st || isWhiteout(st)) return false;
  for (let i = clean.indexOf('/', 1); i > 0; i = clean.indexOf('/', i + 1)) {
    const ancestor = lstatOrUndefined(upper + clean.slice(0, i));
    if (!ancestor?.isDirectory()) return false;
  }
  return true;
}

/**
 * What the image (the lower layers, topmost first) has at `rel` (relative, normalised), as the container saw it at start:
 * the entry's stats, or undefined when no layer has it, a higher layer whites it out, or a higher layer
 * has a non-directory (e.g. a whiteout) where an ancestor should be (ENOTDIR).
 * Limit: an opaque directory inside an image layer (trusted.overlay.opaque, an xattr Node cannot read)
 * is not seen, so a name present only below it is taken as existing.
 */
export function lowerEntry(lowerDirs: readonly string[], rel: string): Stats | undefined {
  for (const layer of lowerDirs) {
    let st: Stats | undefined;
    try {
      st = lstatSync(`${layer}/${rel}`, { throwIfNoEntry: false });
    } catch {
      return undefined;
    }
    if (st) return isWhiteout(st) ? undefined : st;
  }
  return undefined;
}
