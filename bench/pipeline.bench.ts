import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { auditOnlyDecider } from '../agent/engine/audit-decider.js';
import type { ContainerInfo, DockerActionEvent, RunwatchRecord } from '../agent/events/types.js';
import { silentLogger } from '../agent/log.js';
import { ContainerInventory } from '../agent/pipeline/container-inventory.js';
import { EventQueue } from '../agent/pipeline/event-queue.js';
import { Pipeline } from '../agent/pipeline/pipeline.js';
import { buildRecord } from '../agent/pipeline/record-builder.js';
import { JsonlSink } from '../agent/sinks/jsonl/jsonl-sink.js';
import { withBaseline, type Benchmark } from './bench.js';

const EVENTS = 200_000;

function fakeContainer(i: number): ContainerInfo {
  const id = i.toString(16).padStart(64, '0');
  return {
    id,
    name: `c${i}`,
    image: 'acr.example.io/web:1',
    imageId: `sha256:${'a'.repeat(64)}`,
    imageRepoDigests: [],
    created: new Date().toISOString(),
    running: true,
    pid: 1000 + i,
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

function syntheticEvents(n: number): DockerActionEvent[] {
  const out: DockerActionEvent[] = [];
  for (let i = 0; i < n; i++)
    out.push({
      kind: 'docker_action',
      ts: Date.now(),
      scope: 'container',
      action: 'exec_start',
      containerId: (i % 50).toString(16).padStart(64, '0'),
      execId: String(i),
      command: `sh -c echo ${i}`,
    });
  return out;
}

/** Events/s from a synthetic sensor through queue, enrichment, decision and a JSON-lines file, against writing the same lines directly. */
export const pipelineBenchmark: Benchmark = {
  name: 'pipeline',
  async run() {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-bench-'));
    try {
      const inventory = new ContainerInventory();
      for (let i = 0; i < 50; i++) inventory.upsert(fakeContainer(i));

      // Baseline: the same records, already built, serialized and appended straight to a file.
      const events = syntheticEvents(EVENTS);
      const prebuilt: RunwatchRecord[] = events.map((ev) =>
        buildRecord(
          { ...ev, container: { id: ev.containerId!, name: 'c', image: 'acr.example.io/web:1', imageId: 'sha256:x' } },
          { kind: 'audit', rule: 'audit.exec', severity: 'medium', message: 'x' },
          'bench',
        ),
      );
      const direct = path.join(dir, 'direct.jsonl');
      const fd = openSync(direct, 'a');
      let t0 = process.hrtime.bigint();
      for (let i = 0; i < prebuilt.length; i += 512)
        writeSync(
          fd,
          prebuilt
            .slice(i, i + 512)
            .map((r) => JSON.stringify(r))
            .join('\n') + '\n',
        );
      closeSync(fd);
      const directSecs = Number(process.hrtime.bigint() - t0) / 1e9;

      const file = path.join(dir, 'pipeline.jsonl');
      const queue = new EventQueue(EVENTS);
      const sink = new JsonlSink({ path: file, fsyncIntervalMs: 1000, log: silentLogger });
      const pipeline = new Pipeline({ queue, inventory, decider: () => auditOnlyDecider, sinks: [sink], host: 'bench', log: silentLogger, groupWindowMs: 0 });
      const fresh = syntheticEvents(EVENTS);
      t0 = process.hrtime.bigint();
      for (const ev of fresh) queue.push(ev);
      pipeline.start();
      while (statSync(file, { throwIfNoEntry: false })?.size !== undefined && (pipeline.health().sinks as { delivered: number }[])[0].delivered < EVENTS) {
        await new Promise((r) => setImmediate(r));
      }
      const pipeSecs = Number(process.hrtime.bigint() - t0) / 1e9;
      await pipeline.stop();
      await sink.shutdown();
      const pipeRate = EVENTS / pipeSecs;
      const directRate = EVENTS / directSecs;
      return [
        withBaseline(
          { name: 'pipeline: events/s (queue→enrich→decide→JSON-lines file)', value: pipeRate, unit: 'events/s' },
          { name: 'direct JSON-lines write', value: directRate },
        ),
      ];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
