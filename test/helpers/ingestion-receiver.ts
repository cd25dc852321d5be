import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseConfig, type Config } from '../../agent/config/load.js';
import { silentLogger, type Logger } from '../../agent/log.js';
import { Agent } from '../../agent/main.js';
import { deepMerge, MemorySink } from './test-agent.js';

/** One envelope as it arrived at POST /v2.1/track (JSON-decoded). */
export interface ReceivedEnvelope {
  ver: number;
  name: string;
  time: string;
  iKey: string;
  tags: Record<string, string>;
  data: {
    baseType: string;
    baseData: { name?: string; properties?: Record<string, string>; metrics?: { name: string; value: number }[]; [k: string]: unknown };
  };
}

/** How the receiver answers. `partial` decides per envelope: a status for a failed item, undefined to accept it. */
export type ReceiverMode =
  | { kind: 'accept' }
  | { kind: 'status'; status: number; retryAfter?: string }
  | { kind: 'partial'; itemStatus: (env: ReceivedEnvelope, index: number) => number | undefined }
  /** Takes the request (its items count as accepted, as when a real endpoint's answer gets lost) and never answers. */
  | { kind: 'hang' };

export interface TrackRequest {
  envelopes: ReceivedEnvelope[];
  status: number | 'hung';
  /** Indexes the receiver accepted. */
  accepted: number[];
}

export interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string | number; doubleValue?: number; boolValue?: boolean; arrayValue?: { values: OtlpAttribute['value'][] } };
}

/**
 * A local stand-in for the Application Insights ingestion endpoint (`POST /v2.1/track`, JSON array of
 * envelopes, gzip accepted) and an OTLP/HTTP receiver (`/v1/logs`, `/v1/metrics`, JSON), on 127.0.0.1 only.
 * It can answer 200, 206 partial success, any status, hang, or refuse connections (`refuse()` closes the
 * listening socket; `resume()` listens on the same port again).
 */
export class IngestionReceiver {
  readonly requests: TrackRequest[] = [];
  /** Every envelope the receiver accepted, in arrival order (duplicates included). */
  readonly accepted: ReceivedEnvelope[] = [];
  readonly otlpLogs: Record<string, unknown>[] = [];
  readonly otlpMetrics: Record<string, unknown>[] = [];
  mode: ReceiverMode = { kind: 'accept' };
  private server: http.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly hung = new Set<http.ServerResponse>();

  private constructor(
    readonly port: number,
    server: http.Server,
  ) {
    this.server = server;
  }

  static async start(): Promise<IngestionReceiver> {
    const r = new IngestionReceiver(0, http.createServer());
    await r.listen(0);
    return r;
  }

  /** Base URL, e.g. http://127.0.0.1:41234 */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A connection string pointing at this receiver (allowHttpLoopback must be on). */
  connectionString(key = '00000000-0000-4000-8000-000000000001'): string {
    return `InstrumentationKey=${key};IngestionEndpoint=${this.url}/`;
  }

  /** Custom events accepted, by name. */
  events(name?: string): ReceivedEnvelope[] {
    return this.accepted.filter((e) => e.data.baseType === 'EventData' && (name === undefined || e.data.baseData.name === name));
  }

  metrics(): ReceivedEnvelope[] {
    return this.accepted.filter((e) => e.data.baseType === 'MetricData');
  }

  /** Record ids (`properties.id`) of the accepted custom events, duplicates included. */
  acceptedIds(): string[] {
    return this.events().map((e) => e.data.baseData.properties?.id ?? '');
  }

  /** Closes the listening socket and every open connection: clients get ECONNREFUSED until resume(). */
  async refuse(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  async resume(): Promise<void> {
    await this.listen(this.port);
  }

  async stop(): Promise<void> {
    if (this.server.listening) await this.refuse();
  }

  private async listen(port: number): Promise<void> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    (this as { port: number }).port = (this.server.address() as AddressInfo).port;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
    const url = req.url ?? '';
    if (req.method === 'POST' && url.endsWith('/track')) return this.track(JSON.parse(body.toString('utf8')) as ReceivedEnvelope[], res);
    if (req.method === 'POST' && (url === '/v1/logs' || url === '/v1/metrics'))
      return this.otlp(url, JSON.parse(body.toString('utf8')) as Record<string, unknown>, res);
    res.writeHead(404).end();
  }

  private track(envelopes: ReceivedEnvelope[], res: http.ServerResponse): void {
    const mode = this.mode;
    const accept = (indexes: number[]) => {
      for (const i of indexes) this.accepted.push(envelopes[i]);
      return indexes;
    };
    const all = envelopes.map((_, i) => i);
    switch (mode.kind) {
      case 'accept':
        this.requests.push({ envelopes, status: 200, accepted: accept(all) });
        return void res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ itemsReceived: envelopes.length, itemsAccepted: envelopes.length, errors: [] }));
      case 'status': {
        this.requests.push({ envelopes, status: mode.status, accepted: [] });
        const errors = all.map((index) => ({ index, statusCode: mode.status, message: 'unavailable' }));
        return void res
          .writeHead(mode.status, { 'content-type': 'application/json', ...(mode.retryAfter && { 'retry-after': mode.retryAfter }) })
          .end(JSON.stringify({ itemsReceived: envelopes.length, itemsAccepted: 0, errors }));
      }
      case 'partial': {
        const errors = envelopes.flatMap((e, index) => {
          const statusCode = mode.itemStatus(e, index);
          return statusCode === undefined ? [] : [{ index, statusCode, message: `item ${index} failed` }];
        });
        const failed = new Set(errors.map((e) => e.index));
        const status = errors.length === 0 ? 200 : errors.length === envelopes.length ? errors[0].statusCode : 206;
        this.requests.push({ envelopes, status, accepted: accept(all.filter((i) => !failed.has(i))) });
        return void res
          .writeHead(status, { 'content-type': 'application/json' })
          .end(JSON.stringify({ itemsReceived: envelopes.length, itemsAccepted: envelopes.length - errors.length, errors }));
      }
      case 'hang':
        this.requests.push({ envelopes, status: 'hung', accepted: accept(all) });
        this.hung.add(res);
        return;
    }
  }

  private otlp(url: string, body: Record<string, unknown>, res: http.ServerResponse): void {
    if (this.mode.kind === 'status') return void res.writeHead(this.mode.status, { 'content-type': 'application/json' }).end('{}');
    (url === '/v1/logs' ? this.otlpLogs : this.otlpMetrics).push(body);
    if (this.mode.kind === 'hang') return void this.hung.add(res);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  }
}

/** Log records of all accepted OTLP log requests, with attributes decoded to plain values. */
export function otlpLogRecords(
  receiver: IngestionReceiver,
): { body?: string; eventName?: string; severityText?: string; attributes: Record<string, unknown> }[] {
  const out: { body?: string; eventName?: string; severityText?: string; attributes: Record<string, unknown> }[] = [];
  for (const req of receiver.otlpLogs as {
    resourceLogs: {
      scopeLogs: { logRecords: { body?: { stringValue?: string }; eventName?: string; severityText?: string; attributes?: OtlpAttribute[] }[] }[];
    }[];
  }[]) {
    for (const rl of req.resourceLogs)
      for (const sl of rl.scopeLogs)
        for (const lr of sl.logRecords)
          out.push({ body: lr.body?.stringValue, eventName: lr.eventName, severityText: lr.severityText, attributes: decodeAttributes(lr.attributes ?? []) });
  }
  return out;
}

export function decodeAttributes(attrs: OtlpAttribute[]): Record<string, unknown> {
  const value = (v: OtlpAttribute['value']): unknown =>
    v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : undefined) ?? v.doubleValue ?? v.boolValue ?? v.arrayValue?.values.map(value);
  return Object.fromEntries(attrs.map((a) => [a.key, value(a.value)]));
}

/** Metric names with their data points' attributes, from accepted OTLP metric requests. */
export function otlpMetricPoints(receiver: IngestionReceiver): { name: string; attributes: Record<string, unknown>; value: number }[] {
  const out: { name: string; attributes: Record<string, unknown>; value: number }[] = [];
  type Point = { attributes?: OtlpAttribute[]; asDouble?: number; asInt?: string | number };
  type Metric = { name: string; gauge?: { dataPoints: Point[] }; sum?: { dataPoints: Point[] } };
  for (const req of receiver.otlpMetrics as { resourceMetrics: { scopeMetrics: { metrics: Metric[] }[] }[] }[]) {
    for (const rm of req.resourceMetrics)
      for (const sm of rm.scopeMetrics)
        for (const m of sm.metrics)
          for (const p of (m.gauge ?? m.sum)?.dataPoints ?? [])
            out.push({ name: m.name, attributes: decodeAttributes(p.attributes ?? []), value: p.asDouble ?? Number(p.asInt ?? NaN) });
  }
  return out;
}

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\]|::ffff:127(\.\d{1,3}){3})$/i;

export interface LoopbackGuard {
  /** Every non-loopback destination something tried to reach (blocked before any packet left). */
  readonly violations: string[];
  restore(): void;
}

/**
 * Fails closed on any TCP connection to a non-loopback address (169.254.169.254, statsbeat hosts, a real
 * ingestion endpoint …): such a connect is recorded and the socket destroyed before it is attempted.
 * Unix sockets (the Docker socket) pass. Covers node:http(s), tls and fetch (undici), which all connect through
 * net.Socket.prototype.connect.
 */
export function installLoopbackGuard(): LoopbackGuard {
  const original = net.Socket.prototype.connect;
  const violations: string[] = [];
  const patched = function (this: net.Socket, ...args: unknown[]): net.Socket {
    const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
    let host: string | undefined;
    let isPath = false;
    if (typeof first === 'object' && first !== null) {
      const o = first as { host?: string; path?: string; port?: number };
      isPath = typeof o.path === 'string' && o.port === undefined;
      host = o.host;
    } else if (typeof first === 'string' && !/^\d+$/.test(first)) {
      isPath = true;
    } else {
      host = typeof args[1] === 'string' ? args[1] : undefined;
    }
    if (!isPath && host !== undefined && !LOOPBACK.test(host)) {
      violations.push(host);
      const err = Object.assign(new Error(`loopback guard: connection to ${host} blocked`), { code: 'ERR_LOOPBACK_GUARD' });
      process.nextTick(() => this.destroy(err));
      return this;
    }
    return (original as (...a: unknown[]) => net.Socket).apply(this, args);
  };
  net.Socket.prototype.connect = patched as typeof original;
  return {
    violations,
    restore: () => {
      if (net.Socket.prototype.connect === (patched as typeof original)) net.Socket.prototype.connect = original;
    },
  };
}

export interface ExportAgent {
  agent: Agent;
  config: Config;
  /** Every record the pipeline produced (the set the endpoint must end up with). */
  memory: MemorySink;
  /** The OpenTelemetry sink's figures from the agent's health report. */
  otelStats(): Record<string, number | string | boolean>;
  stop(): Promise<void>;
}

/**
 * The real agent (Docker sensor on, other sensors off) exporting to `receiver`, with its state (and spool) in
 * `stateDir`, which the caller owns: starting another one over the same directory is an agent restart.
 */
export async function startExportAgent(opts: {
  stateDir: string;
  receiver: IngestionReceiver;
  otlp?: boolean;
  overrides?: Record<string, unknown>;
  log?: Logger;
}): Promise<ExportAgent> {
  const { stateDir, receiver } = opts;
  const base = {
    stateDir,
    host: 'export-test',
    outputs: {
      stdout: { enabled: false },
      jsonl: { path: '' },
      azureMonitor: { connectionString: receiver.connectionString(), allowHttpLoopback: true },
      otlp: { endpoint: opts.otlp ? receiver.url : '' },
      spool: { retryInitialMs: 50, retryMaxMs: 400, requestTimeoutMs: 1500 },
    },
    pipeline: { groupWindowSeconds: 0 },
    rules: { watch: false },
    sensors: { process: { enabled: false }, file: { enabled: false }, network: { enabled: false } },
    metrics: { enabled: false },
  };
  const config = parseConfig(JSON.stringify(deepMerge(base, opts.overrides ?? {})), path.join(stateDir, 'config.yaml'));
  const memory = new MemorySink();
  const agent = new Agent({ config, log: opts.log ?? silentLogger, extraSinks: [memory] });
  await agent.start();
  let stopped = false;
  return {
    agent,
    config,
    memory,
    otelStats: () => {
      const sinks = (agent.health().pipeline as { sinks: ({ name: string } & Record<string, number | string | boolean>)[] }).sinks;
      return sinks.find((s) => s.name.startsWith('otel:')) ?? {};
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await agent.stop();
    },
  };
}
