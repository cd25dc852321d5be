import type { ContainerInfo, ContainerRef } from '../events/types.js';

export type InventoryChange =
  { type: 'added'; info: ContainerInfo } | { type: 'updated'; info: ContainerInfo; previous: ContainerInfo } | { type: 'removed'; info: ContainerInfo };

export type InventoryListener = (change: InventoryChange) => void;

/**
 * The running containers of this host as the Docker sensor last saw them. Removed containers stay
 * findable for a while (tombstones) so that events which arrive after a container died still get
 * their context.
 */
export class ContainerInventory {
  private readonly live = new Map<string, ContainerInfo>();
  private readonly gone = new Map<string, { info: ContainerInfo; at: number }>();
  private readonly listeners = new Set<InventoryListener>();

  constructor(private readonly tombstoneMs = 10 * 60_000) {}

  /** Live containers only. */
  list(): ContainerInfo[] {
    return [...this.live.values()];
  }

  get size(): number {
    return this.live.size;
  }

  /** A live container, or a recently removed one. */
  get(id: string): ContainerInfo | undefined {
    return this.live.get(id) ?? this.gone.get(id)?.info;
  }

  isLive(id: string): boolean {
    return this.live.has(id);
  }

  /** Accepts a full id or a unique prefix of at least 12 characters. */
  find(idOrPrefix: string): ContainerInfo | undefined {
    const exact = this.get(idOrPrefix);
    if (exact || idOrPrefix.length < 12) return exact;
    for (const [id, info] of this.live) if (id.startsWith(idOrPrefix)) return info;
    return undefined;
  }

  upsert(info: ContainerInfo): void {
    const previous = this.live.get(info.id);
    this.live.set(info.id, info);
    this.gone.delete(info.id);
    this.emit(previous ? { type: 'updated', info, previous } : { type: 'added', info });
  }

  remove(id: string, now = Date.now()): ContainerInfo | undefined {
    const info = this.live.get(id);
    if (!info) return undefined;
    this.live.delete(id);
    this.gone.set(id, { info: { ...info, running: false, pid: 0 }, at: now });
    this.prune(now);
    this.emit({ type: 'removed', info });
    return info;
  }

  subscribe(listener: InventoryListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private prune(now: number): void {
    for (const [id, t] of this.gone) {
      if (now - t.at > this.tombstoneMs) this.gone.delete(id);
      else break; // insertion order = removal order
    }
  }

  private emit(change: InventoryChange): void {
    for (const l of this.listeners) {
      try {
        l(change);
      } catch {
        // A listener's failure must not stop the inventory or the other listeners; they count their own errors.
      }
    }
  }
}

export function toContainerRef(info: ContainerInfo): ContainerRef {
  const ref: ContainerRef = { id: info.id, name: info.name, image: info.image, imageId: info.imageId };
  if (info.imageDigest) ref.imageDigest = info.imageDigest;
  if (info.labels && Object.keys(info.labels).length) ref.labels = info.labels;
  return ref;
}
