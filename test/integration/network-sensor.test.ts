import { describe, expect, it } from 'vitest';
import type { Decider } from '../../agent/engine/engine.js';
import { loadRuleset } from '../../agent/engine/rule-compiler.js';
import { RulesDecider } from '../../agent/engine/rules-decider.js';
import type { NetSocketEvent, RunwatchRecord } from '../../agent/events/types.js';
import type { SensorHealth } from '../../agent/sensors/sensor.js';
import { docker, dockerExec, runContainer } from '../helpers/docker.js';
import { startTestAgent, waitFor, type TestAgent } from '../helpers/test-agent.js';

const RULES_DIR = new URL('../fixtures/net/rules/', import.meta.url).pathname;

interface NetAgent extends TestAgent {
  /** Every net_socket event the pipeline decided on, in order. */
  sockets: NetSocketEvent[];
  waitForSocket(pred: (e: NetSocketEvent) => boolean, what: string): Promise<NetSocketEvent>;
  health(): SensorHealth;
}

/**
 * The real agent with the network sensor polling every 0.5 s, deciding with the rules engine over
 * test/fixtures/net/rules (busybox may listen on tcp:8080 and connect to 127.0.0.1:8080). The decider is
 * wrapped so the raw events can be checked beside the records they produce.
 */
async function startNetAgent(): Promise<NetAgent> {
  const t = await startTestAgent({ sensors: { network: { enabled: true, intervalSeconds: 0.5 } } });
  const rules = new RulesDecider(loadRuleset([RULES_DIR], { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } }));
  const sockets: NetSocketEvent[] = [];
  const tee: Decider = {
    decide(ev, ctx) {
      if (ev.kind === 'net_socket') sockets.push(ev);
      return rules.decide(ev, ctx);
    },
  };
  t.agent.setDecider(tee);
  return {
    ...t,
    sockets,
    waitForSocket: (pred, what) =>
      waitFor(
        () => sockets.find(pred),
        20_000,
        () => `${what}; got ${sockets.map((s) => `${s.direction} ${s.local}>${s.remote ?? ''}`).join(', ') || 'none'}`,
      ),
    health: () => (t.agent.health().sensors as Record<string, SensorHealth>).network,
  };
}

const portOf = (endpoint: string | undefined) => Number(endpoint?.slice(endpoint.lastIndexOf(':') + 1));
const netRecords = (t: TestAgent, id: string, rule: string): RunwatchRecord[] => t.records.filter((r) => r.rule === rule && r.container?.id === id);

describe('network sensor (real containers, loopback only)', () => {
  it('says nothing about an allowed listening port and alerts on 4444 with the port and the process', async () => {
    const t = await startNetAgent();
    const id = await runContainer({ cmd: ['sh', '-c', 'sleep 300 | nc -l -p 8080 & exec sleep 300'] });
    const allowed = await t.waitForSocket((e) => e.containerId === id && e.direction === 'listen' && portOf(e.local) === 8080, 'the 8080 listener');
    expect(allowed).toMatchObject({
      protocol: 'tcp6',
      local: '[::]:8080',
      state: 'LISTEN',
      process: { exe: '/bin/busybox', args: ['nc', '-l', '-p', '8080'] },
    });

    await dockerExec(id, ['nc', '-l', '-p', '4444'], ['-d']);
    const ev = await t.waitForSocket((e) => e.containerId === id && e.direction === 'listen' && portOf(e.local) === 4444, 'the 4444 listener');
    expect(ev).toMatchObject({
      kind: 'net_socket',
      protocol: 'tcp6',
      local: '[::]:4444',
      state: 'LISTEN',
      process: { exe: '/bin/busybox', args: ['nc', '-l', '-p', '4444'] },
    });
    expect(ev.process?.pid).toBeGreaterThan(1);

    const rec = await t.waitForRecord((r) => r.rule === 'network.listen_not_allowed' && r.container?.id === id);
    expect(rec).toMatchObject({
      kind: 'alert',
      profile: 'busybox-net-test',
      network: { protocol: 'tcp6', direction: 'listen', local: '[::]:4444' },
      process: { pid: ev.process?.pid, exe: '/bin/busybox', args: ['nc', '-l', '-p', '4444'] },
    });
    // The 8080 event was decided before the 4444 one (one queue, in order): it gave no alert.
    expect(netRecords(t, id, 'network.listen_not_allowed').map((r) => r.network?.local)).toEqual(['[::]:4444']);
  });

  it('alerts on a connection to a non-allowed 127.0.0.1 port with the remote, and not on the accepted side', async () => {
    const t = await startNetAgent();
    const id = await runContainer({ cmd: ['sh', '-c', 'sleep 300 | nc -l -p 5555 & sleep 300 | nc -l -p 8080 & exec sleep 300'] });
    await t.waitForSocket((e) => e.containerId === id && portOf(e.local) === 5555, 'the 5555 listener');
    await t.waitForSocket((e) => e.containerId === id && portOf(e.local) === 8080, 'the 8080 listener');

    await dockerExec(id, ['sh', '-c', 'sleep 300 | nc 127.0.0.1 8080'], ['-d']);
    await dockerExec(id, ['sh', '-c', 'sleep 300 | nc 127.0.0.1 5555'], ['-d']);
    const ev = await t.waitForSocket((e) => e.containerId === id && e.direction === 'connect' && e.remote === '127.0.0.1:5555', 'the connection to 5555');
    expect(ev).toMatchObject({ protocol: 'tcp', state: 'ESTABLISHED', process: { exe: '/bin/busybox', args: ['nc', '127.0.0.1', '5555'] } });
    expect(ev.local).toMatch(/^127\.0\.0\.1:\d+$/);

    const rec = await t.waitForRecord((r) => r.rule === 'network.connect_not_allowed' && r.container?.id === id);
    expect(rec).toMatchObject({
      network: { direction: 'connect', remote: '127.0.0.1:5555', local: ev.local },
      process: { args: ['nc', '127.0.0.1', '5555'] },
      allowHint: expect.stringContaining('tcp:127.0.0.1:5555'),
    });
    const toAllowed = await t.waitForSocket(
      (e) => e.containerId === id && e.direction === 'connect' && e.remote === '127.0.0.1:8080',
      'the connection to 8080',
    );
    expect(toAllowed.process?.args).toEqual(['nc', '127.0.0.1', '8080']);
    // Both accepted sides (local 5555 and 8080) are inbound; only the allowed-or-not client sides are connections.
    const connects = t.sockets.filter((e) => e.containerId === id && e.direction === 'connect');
    expect(connects.map((e) => e.remote).sort()).toEqual(['127.0.0.1:5555', '127.0.0.1:8080']);
    expect(netRecords(t, id, 'network.connect_not_allowed').map((r) => r.network?.remote)).toEqual(['127.0.0.1:5555']);
  });

  it('reads a shared namespace once and names the container whose process holds the socket', async () => {
    const t = await startNetAgent();
    const owner = await runContainer({ cmd: ['sh', '-c', 'sleep 300 | nc -l -p 6000 & exec sleep 300'] });
    const joiner = await runContainer({ flags: ['--network', `container:${owner}`], cmd: ['sh', '-c', 'sleep 300 | nc -l -p 6001 & exec sleep 300'] });
    const a = await t.waitForSocket((e) => portOf(e.local) === 6000 && e.containerId === owner, 'the owner listener');
    const b = await t.waitForSocket((e) => portOf(e.local) === 6001 && e.direction === 'listen', 'the joiner listener');
    expect(b.containerId).toBe(joiner);
    expect(b.process?.args).toEqual(['nc', '-l', '-p', '6001']);
    expect(a.process?.pid).not.toBe(b.process?.pid);
    // One namespace, one read: each socket is reported once, not once per container.
    expect(t.sockets.filter((e) => portOf(e.local) === 6000 || portOf(e.local) === 6001)).toHaveLength(2);
  });

  it("gives a host-network container only its own sockets of the host's table", async () => {
    const t = await startNetAgent();
    const port = 20_000 + (process.pid % 10_000);
    const id = await runContainer({ flags: ['--network', 'host'], cmd: ['httpd', '-f', '-p', `127.0.0.1:${port}`] });
    const ev = await t.waitForSocket((e) => e.containerId === id && e.direction === 'listen', 'the host-network listener');
    expect(ev).toMatchObject({
      protocol: 'tcp',
      local: `127.0.0.1:${port}`,
      process: { exe: '/bin/busybox', args: ['httpd', '-f', '-p', `127.0.0.1:${port}`] },
    });
    // Another poll or two: still nothing else of the host's sockets is put on this container.
    const cycles = Number(t.health().details?.cycles);
    await waitFor(
      () => Number(t.health().details?.cycles) >= cycles + 2,
      10_000,
      () => 'two more polls',
    );
    expect(t.sockets.filter((e) => e.containerId === id).map((e) => e.local)).toEqual([`127.0.0.1:${port}`]);
    expect(Number(t.health().details?.hostSocketsSkipped)).toBeGreaterThan(0);
  });

  it('keeps polling when containers stop mid-cycle', async () => {
    const t = await startNetAgent();
    const doomed = await Promise.all([0, 1, 2, 3].map(() => runContainer({ cmd: ['sh', '-c', 'sleep 300 | nc -l -p 7000 & exec sleep 300'] })));
    const survivor = await runContainer({ cmd: ['sleep', '300'] });
    await waitFor(
      () => doomed.every((id) => t.sockets.some((e) => e.containerId === id && portOf(e.local) === 7000)),
      20_000,
      () => 'the listeners of the containers to stop',
    );
    await docker(['kill', ...doomed]);
    await dockerExec(survivor, ['nc', '-l', '-p', '7001'], ['-d']);
    const ev = await t.waitForSocket((e) => e.containerId === survivor && portOf(e.local) === 7001, 'the survivor listener after the others stopped');
    expect(ev.process?.args).toEqual(['nc', '-l', '-p', '7001']);
    const cycles = Number(t.health().details?.cycles);
    await waitFor(
      () => Number(t.health().details?.cycles) >= cycles + 2,
      10_000,
      () => 'two more polls',
    );
    expect(t.health()).toMatchObject({ state: 'running', details: { errors: 0 } });
  });
});
