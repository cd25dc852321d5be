import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../../agent/config/load.js';
import type { ContainerInfo, NetSocketEvent } from '../../../../agent/events/types.js';
import { silentLogger } from '../../../../agent/log.js';
import { ContainerInventory } from '../../../../agent/pipeline/container-inventory.js';
import { EventQueue } from '../../../../agent/pipeline/event-queue.js';
import { NetworkSensor } from '../../../../agent/sensors/network/network-sensor.js';
import { cgroupProcsCandidates } from '../../../../agent/sensors/network/socket-owners.js';

const FIXTURES = new URL('../../../fixtures/net/', import.meta.url).pathname;
const HOST_NETNS = 'net:[4026531840]';

/**
 * A /proc and /sys/fs/cgroup laid out like the kernel's, in a temp folder: the sensor's logic (grouping by
 * namespace, host attribution, owners, diffing) runs on exact, repeatable input. Real kernel reads are in
 * test/integration/network-sensor.test.ts.
 */
class FakeHost {
  readonly root = mkdtempSync(path.join(tmpdir(), 'rw-net-'));
  readonly proc = path.join(this.root, 'proc');
  readonly cgroup = path.join(this.root, 'cgroup');
  readonly inventory = new ContainerInventory();

  constructor() {
    mkdirSync(path.join(this.proc, 'self', 'ns'), { recursive: true });
    symlinkSync(HOST_NETNS, path.join(this.proc, 'self', 'ns', 'net'));
    mkdirSync(path.join(this.proc, 'sys/net/ipv4'), { recursive: true });
    writeFileSync(path.join(this.proc, 'sys/net/ipv4/ip_local_port_range'), '32768\t60999\n');
  }

  /** A process in a namespace whose tables are copied from test/fixtures/net/<tables>. */
  process(pid: number, opts: { netns: string; tables?: string; containerId?: string; sockets?: number[]; cmdline?: string[] }): void {
    const dir = path.join(this.proc, String(pid));
    mkdirSync(path.join(dir, 'ns'), { recursive: true });
    mkdirSync(path.join(dir, 'fd'), { recursive: true });
    symlinkSync(opts.netns, path.join(dir, 'ns', 'net'));
    if (opts.tables) this.setTables(pid, opts.tables);
    (opts.sockets ?? []).forEach((inode, i) => symlinkSync(`socket:[${inode}]`, path.join(dir, 'fd', String(i + 3))));
    symlinkSync('/bin/busybox', path.join(dir, 'exe'));
    writeFileSync(path.join(dir, 'cmdline'), (opts.cmdline ?? ['sleep', '300']).join('\0') + '\0');
    if (opts.containerId) {
      writeFileSync(path.join(dir, 'cgroup'), `8:pids:/docker/${opts.containerId}\n4:memory:/docker/${opts.containerId}\n0::/docker/${opts.containerId}\n`);
      const procs = path.join(this.cgroup, 'pids', 'docker', opts.containerId, 'cgroup.procs');
      mkdirSync(path.dirname(procs), { recursive: true });
      let pids = '';
      try {
        pids = readFileSync(procs, 'latin1');
      } catch {
        // First process of the container.
      }
      writeFileSync(procs, `${pids}${pid}\n`);
    }
  }

  setTables(pid: number, tables: string): void {
    const net = path.join(this.proc, String(pid), 'net');
    rmSync(net, { recursive: true, force: true });
    cpSync(path.join(FIXTURES, tables), net, { recursive: true });
  }

  container(id: string, pid: number, extra: Partial<ContainerInfo> = {}): ContainerInfo {
    const info: ContainerInfo = {
      id,
      name: id.slice(0, 4),
      image: 'runwatch-test/busybox:1',
      imageId: `sha256:${'b'.repeat(64)}`,
      imageRepoDigests: [],
      created: '',
      running: true,
      pid,
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
    this.inventory.upsert(info);
    return info;
  }

  /** ownerWaitSeconds 0: a socket whose holder is not found is reported at once, without a process. */
  async sensor(ownerWaitSeconds = 0): Promise<{ sensor: NetworkSensor; events: () => NetSocketEvent[] }> {
    const queue = new EventQueue(1000);
    const sensor = new NetworkSensor({ intervalSeconds: 3600, procRoot: this.proc, cgroupRoot: this.cgroup, ownerWaitSeconds });
    await sensor.start({ config: parseConfig('{}', 'test.yaml'), queue, inventory: this.inventory, log: silentLogger, signal: new AbortController().signal });
    cleanups.push(() => sensor.stop());
    return { sensor, events: () => queue.take(1000) as NetSocketEvent[] };
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});
function fakeHost(): FakeHost {
  const h = new FakeHost();
  cleanups.push(() => rmSync(h.root, { recursive: true, force: true }));
  return h;
}

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const C = 'c'.repeat(64);
const D = 'd'.repeat(64);
const brief = (e: NetSocketEvent) =>
  `${e.containerId.slice(0, 1)} ${e.direction} ${e.protocol} ${e.local}${e.remote ? ` > ${e.remote}` : ''}${e.process ? ` pid=${e.process.pid}` : ''}`;

describe('network sensor on a fake /proc', () => {
  it('reads a namespace shared by two containers once and gives each socket to the container holding it', async () => {
    const h = fakeHost();
    h.process(100, { netns: 'net:[1]', tables: 'busybox', containerId: A });
    h.process(101, { netns: 'net:[1]', containerId: A, sockets: [1031166], cmdline: ['httpd', '-f', '-p', '127.0.0.1:8080'] });
    h.process(200, { netns: 'net:[1]', containerId: B, sockets: [1031396], cmdline: ['nc', '127.0.0.1', '5555'] });
    h.container(A, 100);
    h.container(B, 200, { networkMode: `container:${A}` });
    const { sensor, events } = await h.sensor();
    expect(events().map(brief).sort()).toEqual([
      'a connect tcp 127.0.0.1:56548 > 127.0.0.1:8080', // its holder is not in the fixture's fds: the namespace's own container, no process
      'a listen tcp 127.0.0.1:8080 pid=101',
      'a listen tcp6 [::]:4444',
      'b connect tcp 127.0.0.1:58296 > 127.0.0.1:5555 pid=200',
    ]);
    expect(sensor.health().details).toMatchObject({ namespaces: 1, tableReads: 2, ownerNotFound: 2 });
  });

  it('waits for the holder of a socket when the container that joined the namespace is not in the inventory yet', async () => {
    const h = fakeHost();
    h.process(100, { netns: 'net:[1]', tables: 'busybox', containerId: A, sockets: [1031166, 1032196, 1031395, 1031396] });
    h.process(200, { netns: 'net:[1]', containerId: B, sockets: [1099999] });
    h.container(A, 100);
    const { sensor, events } = await h.sensor(60);
    expect(events().map(brief)).toHaveLength(4);
    // Appears as if B's process had just opened a connection: a new row, held by B's process.
    const net = path.join(h.proc, '100', 'net');
    const row = '   2: 0100007F:9C41 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1099999 1 0 20 0 0 10 -1';
    writeFileSync(path.join(net, 'tcp'), `${readFileSync(path.join(net, 'tcp'), 'latin1')}${row}\n`);
    writeFileSync(path.join(net, 'sockstat'), 'TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 160\nUDP: inuse 1 mem 0\n');
    await sensor.poll();
    expect(events()).toEqual([]);
    h.container(B, 200, { networkMode: `container:${A}` });
    await sensor.poll();
    expect(events().map(brief)).toEqual(['b connect tcp 127.0.0.1:40001 > 127.0.0.1:8080 pid=200']);
  });

  it('carries the owning process with exe and args', async () => {
    const h = fakeHost();
    h.process(100, { netns: 'net:[1]', tables: 'busybox', containerId: A, sockets: [1032196], cmdline: ['nc', '-l', '-p', '4444'] });
    h.container(A, 100);
    const { events } = await h.sensor();
    expect(events().find((e) => e.local === '[::]:4444')).toMatchObject({
      kind: 'net_socket',
      containerId: A,
      protocol: 'tcp6',
      direction: 'listen',
      state: 'LISTEN',
      process: { pid: 100, exe: '/bin/busybox', args: ['nc', '-l', '-p', '4444'] },
    });
  });

  it('gives a host-network container only the host sockets its processes hold', async () => {
    const h = fakeHost();
    h.process(300, { netns: HOST_NETNS, tables: 'crafted', containerId: C, sockets: [2001, 3002], cmdline: ['app'] });
    h.container(C, 300, { networkMode: 'host', hostNamespaces: { pid: false, net: true, ipc: false, uts: false, userns: false } });
    const { sensor, events } = await h.sensor();
    expect(events().map(brief)).toEqual(['c listen tcp6 [::1]:8443 pid=300', 'c connect udp 127.0.0.1:41000 > 127.0.0.1:53 pid=300']);
    expect(sensor.health().details).toMatchObject({ hostSocketsSkipped: 6 });
  });

  it("judges host connections by the host's ephemeral range, other namespaces by the kernel default", async () => {
    const h = fakeHost();
    writeFileSync(path.join(h.proc, 'sys/net/ipv4/ip_local_port_range'), '10000\t60999\n');
    // 127.0.0.1:20000 → 127.0.0.1:40000: a client port under a 10000+ range, a server port under the default.
    const table = `${readFileSync(path.join(FIXTURES, 'busybox/tcp'), 'latin1').split('\n')[0]}\n   0: 0100007F:4E20 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 0 0 10 -1\n`;
    h.process(300, { netns: HOST_NETNS, tables: 'busybox', containerId: C, sockets: [4242] });
    writeFileSync(path.join(h.proc, '300', 'net', 'tcp'), table);
    h.container(C, 300, { networkMode: 'host', hostNamespaces: { pid: false, net: true, ipc: false, uts: false, userns: false } });
    h.process(100, { netns: 'net:[1]', tables: 'busybox', containerId: A, sockets: [4242] });
    writeFileSync(path.join(h.proc, '100', 'net', 'tcp'), table);
    h.container(A, 100);
    const { events } = await h.sensor();
    expect(
      events()
        .filter((e) => e.local === '127.0.0.1:20000')
        .map(brief),
    ).toEqual(['c connect tcp 127.0.0.1:20000 > 127.0.0.1:40000 pid=300']);
  });

  it('reads tables again only when the namespace counters move, then reports only what is new', async () => {
    const h = fakeHost();
    h.process(100, { netns: 'net:[1]', tables: 'busybox', containerId: A });
    h.container(A, 100);
    const { sensor, events } = await h.sensor();
    expect(events()).toHaveLength(4);
    await sensor.poll();
    expect(events()).toEqual([]);
    expect(sensor.health().details).toMatchObject({ tableReads: 2, tableReadsSkipped: 2 });

    // New IPv6 sockets, written in place (the sensor holds the files open); the counters say so.
    const net = path.join(h.proc, '100', 'net');
    writeFileSync(path.join(net, 'tcp6'), readFileSync(path.join(FIXTURES, 'crafted/tcp6'), 'latin1'));
    writeFileSync(path.join(net, 'sockstat6'), 'TCP6: inuse 6\nUDP6: inuse 0\n');
    await sensor.poll();
    expect(events().map(brief)).toEqual([
      'a listen tcp6 [::1]:8443',
      'a connect tcp6 [2001:db8::1]:40000 > [2001:db8::10]:443',
      'a connect tcp6 [2001:db8::1]:40002 > [2001:db8::1:0:0:1]:22',
      'a connect tcp6 [2001:db8::1]:40001 > [2001:db8::10]:443',
      'a connect tcp6 [::1]:40010 > [::1]:8443',
    ]);
    expect(sensor.health().details).toMatchObject({ tableReads: 3 });
  });

  it('keeps polling when a container is gone mid-cycle, and counts it', async () => {
    const h = fakeHost();
    h.process(100, { netns: 'net:[1]', tables: 'busybox', containerId: A });
    h.container(A, 100);
    h.container(D, 400); // listed by the inventory, but its processes have already exited
    const { sensor, events } = await h.sensor();
    expect(events().map((e) => e.containerId)).toEqual([A, A, A, A]);
    expect(sensor.health()).toMatchObject({ state: 'running', details: { containersGone: 1, errors: 0 } });

    // A's process exits too: the open tables keep the namespace readable until the inventory drops A.
    rmSync(path.join(h.proc, '100'), { recursive: true });
    await sensor.poll();
    expect(sensor.health()).toMatchObject({ state: 'running', details: { namespaces: 1 } });
    h.inventory.remove(A);
    await sensor.poll();
    expect(sensor.health()).toMatchObject({ state: 'running', details: { namespaces: 0, errors: 0 } });
  });

  it('reports a malformed table as an error and keeps going', async () => {
    const h = fakeHost();
    h.process(100, { netns: 'net:[1]', tables: 'busybox', containerId: A });
    writeFileSync(path.join(h.proc, '100', 'net', 'tcp'), readFileSync(path.join(FIXTURES, 'malformed-tcp')));
    h.process(200, { netns: 'net:[2]', tables: 'busybox', containerId: B });
    h.container(A, 100);
    h.container(B, 200);
    const { sensor, events } = await h.sensor();
    expect(new Set(events().map((e) => e.containerId))).toEqual(new Set([B]));
    const health = sensor.health();
    expect(health.details).toMatchObject({ errors: 1 });
    expect(health.lastError).toMatch(/net\/tcp:3: local_address: malformed socket table line/);
  });
});

describe('cgroup of a container', () => {
  it('prefers the v1 pids hierarchy, then memory, then v2 (hybrid and pure)', () => {
    const text = '9:name=systemd:/docker/x\n8:pids:/docker/x\n4:memory:/docker/x\n0::/docker/x\n';
    expect(cgroupProcsCandidates(text, '/sys/fs/cgroup')).toEqual([
      '/sys/fs/cgroup/pids/docker/x/cgroup.procs',
      '/sys/fs/cgroup/memory/docker/x/cgroup.procs',
      '/sys/fs/cgroup/unified/docker/x/cgroup.procs',
      '/sys/fs/cgroup/docker/x/cgroup.procs',
    ]);
    expect(cgroupProcsCandidates('0::/system.slice/docker-x.scope\n', '/sys/fs/cgroup')).toEqual([
      '/sys/fs/cgroup/unified/system.slice/docker-x.scope/cgroup.procs',
      '/sys/fs/cgroup/system.slice/docker-x.scope/cgroup.procs',
    ]);
  });
});
