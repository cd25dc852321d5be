import type { ContainerInfo, FileChangeEvent, NetSocketEvent, ProcessExecEvent, RunwatchEvent } from '../../../agent/events/types.js';

/** Shared builders for the learner's unit tests. */
export function container(id: string, image = 'runwatch-test/tools:1', extra: Partial<ContainerInfo> = {}): ContainerInfo {
  return {
    id: id.padEnd(64, '0'),
    name: `c-${id}`,
    image,
    imageId: `sha256:${'b'.repeat(64)}`,
    imageRepoDigests: [],
    created: '',
    running: true,
    pid: 100,
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
    ...extra,
  };
}

let ts = 1_700_000_000_000;

export function exec(c: ContainerInfo, exe: string, args: string[], extra: Partial<ProcessExecEvent> = {}): ProcessExecEvent {
  return { kind: 'process_exec', ts: ts++, containerId: c.id, pid: 10, ppid: 1, exe, args, uid: 0, ancestors: [], resolved: exe !== '', ...extra };
}

export function write(c: ContainerInfo, path: string, op: FileChangeEvent['op'] = 'create'): FileChangeEvent {
  return { kind: 'file_change', ts: ts++, containerId: c.id, path, op };
}

export function listen(c: ContainerInfo, local: string, protocol: NetSocketEvent['protocol'] = 'tcp6'): NetSocketEvent {
  return { kind: 'net_socket', ts: ts++, containerId: c.id, protocol, direction: 'listen', local, state: 'LISTEN' };
}

export function connect(c: ContainerInfo, remote: string, protocol: NetSocketEvent['protocol'] = 'tcp'): NetSocketEvent {
  return { kind: 'net_socket', ts: ts++, containerId: c.id, protocol, direction: 'connect', local: '10.0.0.2:40000', remote, state: 'ESTABLISHED' };
}

/** What a tools container does in these tests: real binaries, busybox applets, writes, a listener, a connection. */
export function toolsBehaviour(c: ContainerInfo): RunwatchEvent[] {
  const out: RunwatchEvent[] = [
    exec(c, '/usr/bin/sleep', ['sleep', 'infinity']),
    exec(c, '/usr/bin/id', ['id']),
    exec(c, '/usr/bin/id', ['id', '-u']),
    exec(c, '/usr/bin/whoami', ['whoami']),
    exec(c, '/bin/busybox', ['mkdir', '-p', '/var/cache/app'], { argv0: 'mkdir' }),
    exec(c, '/bin/busybox', ['sh', '-c', 'x'], { argv0: 'sh' }),
    exec(c, '/bin/busybox', ['busybox', 'touch', '/data/out.txt']),
    write(c, '/var'),
    write(c, '/var/cache'),
    write(c, '/var/cache/app'),
    write(c, '/data'),
    write(c, '/data/out.txt'),
    write(c, '/data/out.txt', 'modify'),
    listen(c, '[::]:8080'),
    connect(c, '[::ffff:127.0.0.1]:5432'),
  ];
  for (let i = 1; i <= 6; i++) out.push(write(c, `/var/cache/app/item${i}`));
  return out;
}
