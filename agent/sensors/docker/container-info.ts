import type Docker from 'dockerode';
import type { ContainerInfo } from '../../events/types.js';

export interface ImageFacts {
  repoDigests: string[];
  created?: string;
  user?: string;
}

/** Maps `docker inspect` output (plus the image's facts) to the inventory's view of a container. */
export function toContainerInfo(c: Docker.ContainerInspectInfo, image: ImageFacts | undefined): ContainerInfo {
  const hc = c.HostConfig ?? ({} as Docker.HostConfig);
  const cfg = c.Config ?? ({} as Docker.ContainerInspectInfo['Config']);
  const imageRef = cfg.Image || c.Image;
  const repoDigests = image?.repoDigests ?? [];
  const graph = (c.GraphDriver?.Data ?? {}) as Record<string, string | undefined>;
  const networkMode = hc.NetworkMode ?? '';
  const info: ContainerInfo = {
    id: c.Id,
    name: (c.Name ?? '').replace(/^\//, ''),
    image: imageRef,
    imageId: c.Image,
    imageRepoDigests: repoDigests,
    created: c.Created,
    running: Boolean(c.State?.Running),
    pid: c.State?.Pid ?? 0,
    user: cfg.User ?? '',
    privileged: Boolean(hc.Privileged),
    capAdd: (hc.CapAdd ?? []).map(canonicalCapability),
    capDrop: (hc.CapDrop ?? []).map(canonicalCapability),
    hostNamespaces: {
      pid: hc.PidMode === 'host',
      net: networkMode === 'host',
      ipc: hc.IpcMode === 'host',
      uts: (hc as { UTSMode?: string }).UTSMode === 'host',
      userns: hc.UsernsMode === 'host',
    },
    networkMode,
    mounts: (c.Mounts ?? []).map((m) => ({ type: m.Type ?? 'bind', source: m.Source ?? '', destination: m.Destination, readOnly: m.RW === false })),
    readOnlyRootfs: Boolean(hc.ReadonlyRootfs),
    envNames: (cfg.Env ?? []).map((e) => e.split('=', 1)[0]),
    memoryLimit: hc.Memory ?? 0,
    cpuLimit: hc.NanoCpus ? hc.NanoCpus / 1e9 : hc.CpuQuota && hc.CpuPeriod ? hc.CpuQuota / hc.CpuPeriod : 0,
  };
  const digest = pickDigest(imageRef, repoDigests);
  if (digest) info.imageDigest = digest;
  if (image?.created) info.imageCreated = image.created;
  if (image?.user !== undefined) info.imageUser = image.user;
  if (c.State?.StartedAt && !c.State.StartedAt.startsWith('0001-')) info.startedAt = c.State.StartedAt;
  if (cfg.Labels && Object.keys(cfg.Labels).length) info.labels = { ...cfg.Labels };
  if (graph.UpperDir) info.upperDir = graph.UpperDir;
  if (graph.MergedDir) info.mergedDir = graph.MergedDir;
  if (graph.LowerDir) info.lowerDirs = graph.LowerDir.split(':');
  // `--tmpfs` mounts are not in Mounts; the file sensor needs them (Docker makes their mount points in the writable layer).
  for (const [destination, options] of Object.entries(hc.Tmpfs ?? {})) {
    if (!info.mounts.some((m) => m.destination === destination))
      info.mounts.push({ type: 'tmpfs', source: '', destination, readOnly: /(^|,)ro(,|$)/.test(options) });
  }
  if (hc.CgroupParent) info.cgroupParent = hc.CgroupParent;
  return info;
}

/** The repo digest the container runs: the one it was started by, else the one of its repository. */
function pickDigest(ref: string, repoDigests: string[]): string | undefined {
  const at = ref.indexOf('@sha256:');
  if (at > 0) return ref;
  const repo = ref.replace(/:[^/:]+$/, '');
  return repoDigests.find((d) => d.startsWith(`${repo}@`)) ?? repoDigests[0];
}

/** Docker accepts "net_admin", "NET_ADMIN" and "CAP_NET_ADMIN"; the inventory always says "CAP_NET_ADMIN" (or "ALL"). */
export function canonicalCapability(cap: string): string {
  const up = cap.toUpperCase();
  return up === 'ALL' || up.startsWith('CAP_') ? up : `CAP_${up}`;
}
