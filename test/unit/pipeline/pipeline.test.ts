import { describe, expect, it } from 'vitest';
import { auditOnlyDecider } from '../../../agent/engine/audit-decider.js';
import type { ContainerInfo, RunwatchEvent, RunwatchRecord } from '../../../agent/events/types.js';
import { silentLogger } from '../../../agent/log.js';
import { ContainerInventory } from '../../../agent/pipeline/container-inventory.js';
import { EventQueue } from '../../../agent/pipeline/event-queue.js';
import { Pipeline } from '../../../agent/pipeline/pipeline.js';
import type { DeliveryResult, Sink } from '../../../agent/sinks/sink.js';

const ID = 'a'.repeat(64);

function container(): ContainerInfo {
  return {
    id: ID,
    name: 'web',
    image: 'acr.example.io/web:1',
    imageId: `sha256:${'b'.repeat(64)}`,
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
  };
}

const exec = (i: number): RunwatchEvent => ({
  kind: 'docker_action',
  ts: 1_700_000_000_000 + i,
  scope: 'container',
  action: 'exec_start',
  containerId: ID,
  execId: `e${i}`,
  command: `id ${i}`,
});

class FlakySink implements Sink {
  readonly name = 'flaky';
  failuresLeft: number;
  got: RunwatchRecord[] = [];
  constructor(failures: number) {
    this.failuresLeft = failures;
  }
  async deliver(batch: readonly RunwatchRecord[]): Promise<DeliveryResult> {
    if (this.failuresLeft-- > 0) return { ok: false, retriable: true, error: 'down' };
    this.got.push(...batch);
    return { ok: true };
  }
  async flush() {}
  async shutdown() {}
}

describe('EventQueue', () => {
  it('refuses and counts events past its capacity, and keeps FIFO order', () => {
    const q = new EventQueue(3);
    for (let i = 0; i < 5; i++) q.push(exec(i));
    expect(q.pushed).toBe(3);
    expect(q.dropped).toBe(2);
    expect(q.take(10).map((e) => e.ts - 1_700_000_000_000)).toEqual([0, 1, 2]);
    expect(q.length).toBe(0);
  });
});

describe('Pipeline', () => {
  it('enriches with the container, decides, builds records and counts every stage', () => {
    const inventory = new ContainerInventory();
    inventory.upsert(container());
    const sink = new FlakySink(0);
    const p = new Pipeline({
      queue: new EventQueue(10),
      inventory,
      decider: () => auditOnlyDecider,
      sinks: [sink],
      host: 'h',
      log: silentLogger,
      groupWindowMs: 0,
    });
    p.processBatch([exec(1), { kind: 'process_exit', ts: 1, pid: 5, containerId: 'f'.repeat(64) }]);
    expect(p.counters.enrich.received).toBe(2);
    expect(p.counters.enrich.unattributed).toBe(1);
    expect(p.counters.decide.emitted).toBe(1);
    expect(p.counters.group.emitted).toBe(1);
  });

  it('keeps records for a failing sink and delivers them, in order, once it recovers', async () => {
    const inventory = new ContainerInventory();
    inventory.upsert(container());
    const queue = new EventQueue(100);
    const sink = new FlakySink(2);
    const p = new Pipeline({ queue, inventory, decider: () => auditOnlyDecider, sinks: [sink], host: 'h', log: silentLogger, groupWindowMs: 0 });
    p.start();
    for (let i = 0; i < 20; i++) queue.push(exec(i));
    const deadline = Date.now() + 5000;
    while (sink.got.length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await p.stop();
    expect(sink.got.map((r) => r.docker?.execId)).toEqual(Array.from({ length: 20 }, (_, i) => `e${i}`));
    expect(sink.got[0].container?.name).toBe('web');
    expect(sink.got[0].message).toContain('id 0');
  });

  it('drains the queue on stop', async () => {
    const queue = new EventQueue(1000);
    const sink = new FlakySink(0);
    const p = new Pipeline({
      queue,
      inventory: new ContainerInventory(),
      decider: () => auditOnlyDecider,
      sinks: [sink],
      host: 'h',
      log: silentLogger,
      groupWindowMs: 60_000,
      batchSize: 7,
    });
    for (let i = 0; i < 500; i++) queue.push(exec(i));
    p.start();
    await p.stop();
    expect(sink.got).toHaveLength(500);
  });

  it('counts a throwing decider instead of crashing', () => {
    const sink = new FlakySink(0);
    const p = new Pipeline({
      queue: new EventQueue(10),
      inventory: new ContainerInventory(),
      decider: () => ({
        decide: () => {
          throw new Error('bug');
        },
      }),
      sinks: [sink],
      host: 'h',
      log: silentLogger,
      groupWindowMs: 0,
    });
    p.processBatch([exec(1), exec(2)]);
    expect(p.counters.decide.errors).toBe(2);
  });

  it('drops the oldest pending records of a sink past its bound, and counts them', async () => {
    const sink = new FlakySink(1_000_000);
    const queue = new EventQueue(100);
    const p = new Pipeline({
      queue,
      inventory: new ContainerInventory(),
      decider: () => auditOnlyDecider,
      sinks: [sink],
      host: 'h',
      log: silentLogger,
      groupWindowMs: 0,
      maxPendingPerSink: 5,
    });
    p.processBatch(Array.from({ length: 8 }, (_, i) => exec(i)));
    const h = p.health() as { sinks: { dropped: number; pending: number }[] };
    expect(h.sinks[0].pending).toBe(5);
    expect(h.sinks[0].dropped).toBe(3);
  });
});
