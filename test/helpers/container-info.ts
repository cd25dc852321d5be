import type { ContainerInfo } from '../../agent/events/types.js';

/** A running container's inventory entry with harmless defaults (no privileges, no mounts, no limits), for tests that need one without Docker. */
export function containerInfo(over: Partial<ContainerInfo> = {}): ContainerInfo {
  return {
    id: 'f'.repeat(64),
    name: 'c',
    image: 'img:1',
    imageId: 'sha256:x',
    imageRepoDigests: [],
    created: '',
    running: true,
    pid: 1,
    user: '',
    privileged: false,
    capAdd: [],
    capDrop: [],
    hostNamespaces: { pid: false, net: false, ipc: false, uts: false, userns: false },
    networkMode: 'none',
    mounts: [],
    readOnlyRootfs: false,
    envNames: [],
    memoryLimit: 0,
    cpuLimit: 0,
    ...over,
  };
}
