/**
 * Typed wrapper around the native proc connector addon
 * (agent/sensors/process/native/proc_connector.cc, built to
 * build/Release/proc_connector.node by node-gyp).
 *
 * The addon subscribes to the kernel's process-events connector, reads
 * /proc/<pid> on its own thread at exec time and hands events to JS in batches.
 * Requirements: Linux, CAP_NET_ADMIN, host network and pid namespaces;
 * CAP_SYS_NICE for the SCHED_FIFO reader (optional, see stats().schedFifo).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface ConnectorForkEvent {
  type: 'fork';
  ts: number;
  parentPid: number;
  childPid: number;
}

export interface ConnectorExecEvent {
  type: 'exec';
  ts: number;
  pid: number;
  ppid: number;
  uid: number;
  euid: number;
  /** Raw audit loginuid; 4294967295 means unset. Read for host processes only (absent for container processes and when unreadable). */
  loginuid?: number;
  /** As seen from the process's own root (container-relative for containers). */
  exe: string;
  /** " (deleted)" suffix stripped, or a memfd: (fileless) image. */
  exeDeleted: boolean;
  args: string[];
  argsTruncated: boolean;
  comm: string;
  cwd?: string;
  /** tty_nr from /proc/<pid>/stat; 0 = no controlling terminal. */
  tty: number;
  /** fd 0 or fd 1 is a socket (typical of reverse shells). */
  stdioSocket: boolean;
  /** 64-hex container id from /proc/<pid>/cgroup, "" for host processes. */
  containerId: string;
  /** false when exe/cmdline could not be read because the process was gone. */
  resolved: boolean;
}

export interface ConnectorExitEvent {
  type: 'exit';
  ts: number;
  pid: number;
  /** exit status, or 128 + signal when killed by a signal. */
  exitCode: number;
  /** Set when the process was killed by a signal. */
  signal?: number;
}

export type ConnectorEvent = ConnectorForkEvent | ConnectorExecEvent | ConnectorExitEvent;

export interface ConnectorStats {
  /** Process fork/exec/exit events accepted from the kernel (= delivered + queueDrops + queued). */
  received: number;
  delivered: number;
  /** Dropped because the native queue was full (JS too slow). */
  queueDrops: number;
  /** Estimated from per-CPU sequence gaps (socket buffer overflow). */
  kernelLost: number;
  /** Overflow episodes reported by recv (one per episode, not per event). */
  enobufs: number;
  rcvbufBytes: number;
  schedFifo: boolean;
  unresolved: number;
  /** Events waiting in the native queue. */
  queued: number;
}

export interface ProcConnectorOptions {
  /** Socket receive buffer to ask for; default 16 MiB (SO_RCVBUFFORCE, else SO_RCVBUF). */
  rcvbufBytes?: number;
  /** Native queue capacity in events; default 32768 (about 6 s of a 1,700 exec/s storm, typically ~15 MB). */
  queueCapacity?: number;
  /** Run the reader thread SCHED_FIFO when permitted; default true. */
  realtime?: boolean;
  /** Max events per onEvents call; default 512. */
  batchMax?: number;
  /** Longest a queued event waits before JS is called (unless a batch fills first); default 10 ms. */
  flushIntervalMs?: number;
}

interface NativeConnector {
  start(): void;
  stop(): void;
  stats(): ConnectorStats;
}

interface NativeModule {
  ProcConnector: new (opts: ProcConnectorOptions, onEvents: (batch: ConnectorEvent[]) => void) => NativeConnector;
}

const ADDON_RELATIVE = path.join('build', 'Release', 'proc_connector.node');

let loaded: { mod: NativeModule } | { error: string } | undefined;

function findAddon(): string | undefined {
  // Source runs from agent/sensors/process/, compiled JS from
  // dist/agent/sensors/process/: walk up to the package root.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, ADDON_RELATIVE);
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function load(): { mod: NativeModule } | { error: string } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    loaded = { error: `proc connector is Linux-only (platform ${process.platform})` };
    return loaded;
  }
  const file = findAddon();
  if (!file) {
    loaded = { error: `${ADDON_RELATIVE} not found (addon not built: run node-gyp rebuild in the package root)` };
    return loaded;
  }
  try {
    const mod = createRequire(import.meta.url)(file) as NativeModule;
    if (typeof mod?.ProcConnector !== 'function') throw new Error('ProcConnector export missing');
    loaded = { mod };
  } catch (err) {
    loaded = { error: `cannot load ${file}: ${err instanceof Error ? err.message : String(err)}` };
  }
  return loaded;
}

export function loadProcConnector(): { available: true } | { available: false; reason: string } {
  const r = load();
  return 'mod' in r ? { available: true } : { available: false, reason: r.error };
}

function native(): NativeModule {
  const r = load();
  if ('mod' in r) return r.mod;
  throw Object.assign(new Error(`proc connector unavailable: ${r.error}`), { code: 'ERR_PROC_CONNECTOR_UNAVAILABLE' });
}

function checkInt(name: string, v: number | undefined, min: number, max: number): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`ProcConnector: ${name} must be an integer in [${min}, ${max}], got ${v}`);
  }
}

export class ProcConnector {
  readonly #native: NativeConnector;

  constructor(opts: ProcConnectorOptions, onEvents: (batch: ConnectorEvent[]) => void) {
    const mod = native();
    checkInt('rcvbufBytes', opts.rcvbufBytes, 65536, 1024 * 1024 * 1024);
    checkInt('queueCapacity', opts.queueCapacity, 1, 1 << 24);
    checkInt('batchMax', opts.batchMax, 1, 1 << 20);
    checkInt('flushIntervalMs', opts.flushIntervalMs, 0, 1000);
    const nativeOpts: ProcConnectorOptions = {};
    if (opts.rcvbufBytes !== undefined) nativeOpts.rcvbufBytes = opts.rcvbufBytes;
    if (opts.queueCapacity !== undefined) nativeOpts.queueCapacity = opts.queueCapacity;
    if (opts.realtime !== undefined) nativeOpts.realtime = opts.realtime;
    if (opts.batchMax !== undefined) nativeOpts.batchMax = opts.batchMax;
    if (opts.flushIntervalMs !== undefined) nativeOpts.flushIntervalMs = opts.flushIntervalMs;
    // A throwing handler must not break the native drain loop; rethrow it
    // outside the addon's callback so it surfaces as an ordinary uncaught error.
    const deliver = (batch: ConnectorEvent[]): void => {
      try {
        onEvents(batch);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    };
    this.#native = new mod.ProcConnector(nativeOpts, deliver);
  }

  /**
   * Subscribes and starts the reader thread. Throws an Error with `code`:
   * ECONNREFUSED (not in the host network namespace), EPERM (no CAP_NET_ADMIN),
   * ETIMEDOUT (no kernel acknowledgement: not in the host pid namespace).
   */
  start(): void {
    this.#native.start();
  }

  /** Unsubscribes, joins the thread and closes the socket. Idempotent; undelivered events are discarded. */
  stop(): void {
    this.#native.stop();
  }

  stats(): ConnectorStats {
    const s = this.#native.stats();
    return {
      received: s.received,
      delivered: s.delivered,
      queueDrops: s.queueDrops,
      kernelLost: s.kernelLost,
      enobufs: s.enobufs,
      rcvbufBytes: s.rcvbufBytes,
      schedFifo: s.schedFifo,
      unresolved: s.unresolved,
      queued: s.queued,
    };
  }
}
