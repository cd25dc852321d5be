import { describe, expect, it, onTestFinished } from 'vitest';
import { docker, dockerExec, runContainer, BUSYBOX_IMAGE } from '../helpers/docker.js';
import { DockerSocketProxy } from '../helpers/docker-socket-proxy.js';
import { startTestAgent, waitFor } from '../helpers/test-agent.js';

describe('Docker sensor (real engine)', () => {
  it('lists running containers at start with their posture fields', async () => {
    const id = await runContainer({
      flags: [
        '--user',
        '1000:1000',
        '--cap-add',
        'NET_ADMIN',
        '--cap-drop',
        'MKNOD',
        '--read-only',
        '--ipc',
        'host',
        '-e',
        'API_TOKEN=not-logged',
        '-v',
        '/etc/hostname:/host-hostname:ro',
        '-m',
        '64m',
        '--label',
        'team=payments',
        '--name',
        `rw-inv-${Date.now()}`,
      ],
    });
    const t = await startTestAgent();
    const info = t.agent.inventory.get(id);
    expect(info).toBeDefined();
    expect(info).toMatchObject({
      id,
      image: BUSYBOX_IMAGE,
      running: true,
      user: '1000:1000',
      privileged: false,
      capAdd: ['CAP_NET_ADMIN'],
      capDrop: ['CAP_MKNOD'],
      readOnlyRootfs: true,
      hostNamespaces: { ipc: true, pid: false, net: false, uts: false },
      networkMode: 'none',
      memoryLimit: 64 * 1024 * 1024,
      labels: expect.objectContaining({ team: 'payments' }),
    });
    expect(info!.pid).toBeGreaterThan(1);
    expect(info!.imageId).toMatch(/^sha256:/);
    expect(info!.envNames).toContain('API_TOKEN');
    expect(JSON.stringify(info)).not.toContain('not-logged');
    expect(info!.mounts).toContainEqual({ type: 'bind', source: '/etc/hostname', destination: '/host-hostname', readOnly: true });
    expect(info!.upperDir).toMatch(/\/diff$/);
    expect(info!.mergedDir).toMatch(/\/merged$/);
    expect(Date.parse(info!.startedAt!)).toBeGreaterThan(0);
  });

  it('follows start, stop and destroy of containers into the inventory', async () => {
    const t = await startTestAgent();
    const id = await runContainer({ keep: true });
    await waitFor(
      () => t.agent.inventory.isLive(id),
      10_000,
      () => 'container in inventory',
    );
    await docker(['rm', '-f', id]);
    await waitFor(
      () => !t.agent.inventory.isLive(id),
      10_000,
      () => 'container gone from inventory',
    );
    // Removed containers stay resolvable for late events.
    expect(t.agent.inventory.get(id)?.running).toBe(false);
  });

  it('replays what happened while its connection to the daemon was cut, each once', async () => {
    const proxy = new DockerSocketProxy();
    await proxy.listen();
    onTestFinished(() => proxy.close());
    const a = await runContainer();
    const t = await startTestAgent({ docker: { socket: proxy.path, reconnectInitialDelayMs: 100, reconnectMaxDelayMs: 300 } });
    expect(t.agent.inventory.isLive(a)).toBe(true);

    await proxy.cut();
    // Meanwhile, through the real socket: an exec into A, a new container B, and A stopped.
    await dockerExec(a, ['cat', '/etc/hostname']);
    const b = await runContainer();
    await docker(['stop', '-t', '0', a]);
    await new Promise((r) => setTimeout(r, 1000));
    await proxy.restore();

    await waitFor(
      () => t.agent.inventory.isLive(b) && !t.agent.inventory.isLive(a),
      20_000,
      () => 'reconciled inventory',
    );
    await t.waitForRecord((r) => r.rule === 'audit.stop' && r.container?.id === a);
    const execs = t.records.filter((r) => r.rule === 'audit.exec' && r.container?.id === a);
    expect(execs.map((r) => r.docker?.action).sort()).toEqual(['exec_create', 'exec_start']);
    expect(execs[0].docker?.command).toBe('cat /etc/hostname');
    expect(t.records.filter((r) => r.rule === 'audit.stop' && r.container?.id === a)).toHaveLength(1);
    const dockerSensor = () =>
      (t.agent.health() as { sensors: { docker: { state: string; details: { reconnects: number; replayed: number } } } }).sensors.docker;
    // The replayed records can be out before the sensor calls itself running again.
    await waitFor(
      () => dockerSensor().state === 'running',
      10_000,
      () => `docker sensor running again: ${JSON.stringify(dockerSensor())}`,
    );
    const { details } = dockerSensor();
    expect(details.reconnects).toBeGreaterThanOrEqual(1);
    expect(details.replayed).toBeGreaterThanOrEqual(3);
  });
});

describe('Docker daemon restart (real engine)', () => {
  it('reconciles the inventory after dockerd restarts and keeps running', async () => {
    const { restartDockerd } = await import('../helpers/dockerd.js');
    const before = await runContainer();
    const t = await startTestAgent({ docker: { reconnectInitialDelayMs: 100, reconnectMaxDelayMs: 500 } });
    expect(t.agent.inventory.isLive(before)).toBe(true);
    await restartDockerd();
    const after = await runContainer();
    await waitFor(
      () => t.agent.inventory.isLive(after) && !t.agent.inventory.isLive(before),
      30_000,
      () => 'inventory reconciled after restart',
    );
    const health = t.agent.health() as { sensors: { docker: { state: string } } };
    await waitFor(
      () => health.sensors.docker.state === 'running' || (t.agent.health() as typeof health).sensors.docker.state === 'running',
      10_000,
      () => 'sensor running',
    );
    // The agent still follows events after the restart.
    await dockerExec(after, ['true']);
    await t.waitForRecord((r) => r.rule === 'audit.exec' && r.container?.id === after);
  });
});
