import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseConfig } from '../agent/config/load.js';
import type { RunwatchRecord } from '../agent/events/types.js';
import { silentLogger } from '../agent/log.js';
import { RecordSpool } from '../agent/pipeline/spool.js';
import { customEventEnvelope } from '../agent/sinks/otel/breeze.js';
import { OtelSink } from '../agent/sinks/otel/otel-sink.js';
import { runwatchResource } from '../agent/sinks/otel/otel-resource.js';
import { toLogRecord } from '../agent/sinks/otel/record-log.js';
import { withBaseline, type Benchmark } from './bench.js';

const RECORDS = 20_000;
const PIPELINE_BATCH = 512;
const REQUEST_BATCH = 500;
const KEY = '00000000-0000-4000-8000-00000000beef';

function record(i: number): RunwatchRecord {
  return {
    time: new Date(1_700_000_000_000 + i).toISOString(),
    kind: 'alert',
    host: 'bench-host',
    rule: 'Unexpected Process',
    severity: 'high',
    message: `Detect /usr/bin/nc started in web-${i % 50}`,
    container: { id: (i % 50).toString(16).padStart(64, '0'), name: `web-${i % 50}`, image: 'acr.example.io/web:1', imageId: `sha256:${'a'.repeat(64)}` },
    profile: 'acme-web',
    process: { pid: 1000 + i, ppid: 1, exe: '/usr/bin/nc', args: ['nc', '-l', '-p', '4444'], uid: 0, user: 'root', ancestors: [{ pid: 1, exe: '/bin/sh' }] },
    decidedBy: 'process.allow',
    allowHint: '/usr/bin/nc',
    id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  };
}

/** A minimal ingestion endpoint on 127.0.0.1: accepts every envelope and counts them. */
async function startReceiver(): Promise<{ url: string; received: () => number; close: () => Promise<void> }> {
  let received = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const n = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown[]).length;
      received += n;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ itemsReceived: n, itemsAccepted: n, errors: [] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received: () => received,
    close: () => new Promise<void>((r) => server.close(() => r())).then(() => server.closeAllConnections()),
  };
}

/**
 * Records/s from Sink.deliver through the durable spool (fsync per pipeline batch) and the drainer to a local
 * ingestion endpoint, against mapping and POSTing the same records straight to it; and spool bytes on disk per
 * record, against the envelope bytes the same record takes on the wire.
 */
export const exportBenchmark: Benchmark = {
  name: 'export',
  async run() {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-bench-export-'));
    const receiver = await startReceiver();
    try {
      const records = Array.from({ length: RECORDS }, (_, i) => record(i));
      const resource = runwatchResource('bench-host');

      // Baseline: the same records mapped to the same envelopes and POSTed straight away in requests of the
      // same size, with nothing on disk: the difference is what durability costs.
      let t0 = process.hrtime.bigint();
      for (let i = 0; i < records.length; i += REQUEST_BATCH) {
        const body = JSON.stringify(records.slice(i, i + REQUEST_BATCH).map((r) => customEventEnvelope(toLogRecord(r, resource), KEY)));
        await fetch(`${receiver.url}/v2.1/track`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.text());
      }
      const directRate = RECORDS / (Number(process.hrtime.bigint() - t0) / 1e9);
      const wireBytes = records.reduce((n, r) => n + Buffer.byteLength(JSON.stringify(customEventEnvelope(toLogRecord(r, resource), KEY))) + 1, 0) / RECORDS;

      const stateDir = path.join(dir, 'state');
      const config = parseConfig(
        JSON.stringify({
          stateDir,
          host: 'bench-host',
          outputs: { azureMonitor: { connectionString: `InstrumentationKey=${KEY};IngestionEndpoint=${receiver.url}`, allowHttpLoopback: true } },
          metrics: { enabled: false },
        }),
        path.join(dir, 'config.yaml'),
      );
      const before = receiver.received();
      const sink = new OtelSink({ config, log: silentLogger, notify: () => {} });
      t0 = process.hrtime.bigint();
      for (let i = 0; i < records.length; i += PIPELINE_BATCH) {
        const r = await sink.deliver(records.slice(i, i + PIPELINE_BATCH));
        if (!r.ok) throw new Error(r.error);
      }
      const spooledSecs = Number(process.hrtime.bigint() - t0) / 1e9;
      while (receiver.received() - before < RECORDS) await new Promise((r) => setTimeout(r, 5));
      const spoolRate = RECORDS / (Number(process.hrtime.bigint() - t0) / 1e9);
      await sink.shutdown();

      // Bytes on disk: a spool nobody drains.
      const spool = new RecordSpool({ dir: path.join(dir, 'sizing'), maxBytes: 1 << 30, consumers: ['none'], log: silentLogger });
      for (let i = 0; i < records.length; i += PIPELINE_BATCH) spool.append(records.slice(i, i + PIPELINE_BATCH));
      const diskBytes = spool.bytes / RECORDS;
      spool.close();

      return [
        withBaseline(
          { name: 'export: records/s through the spool to a local endpoint', value: spoolRate, unit: 'records/s' },
          { name: 'map + POST directly, no spool', value: directRate },
        ),
        { name: 'export: records/s accepted by the spool (fsync per 512)', value: RECORDS / spooledSecs, unit: 'records/s' },
        withBaseline(
          { name: 'export: spool bytes on disk per record', value: diskBytes, unit: 'bytes' },
          { name: 'envelope bytes on the wire', value: wireBytes },
        ),
      ];
    } finally {
      await receiver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
