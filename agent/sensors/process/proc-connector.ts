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
  /**
   * Real uid, -1 when unknown. Tracked from the event stream (inherited at fork, changed by the kernel's uid
   * events) and read from /proc/<pid>/status only where the stream cannot tell (the lineage started before
   * the subscription, or events were lost), so it is known even for most processes gone before /proc was read.
   */
  uid: number;
  /** Raw audit loginuid; 4294967295 means unset. Read for the host docker CLI only (absent otherwise and when unreadable). */
  loginuid?: number;
  /** As seen from the process's own root (container-relative for containers). */
  exe: string;
  /** " (deleted)" suffix stripped, or a memfd: (fileless) image. */
  exeDeleted: boolean;
  /** Read for container processes and the host docker CLI; [] for other host processes (only their exe is read). */
  args: string[];
  argsTruncated: boolean;
  comm: string;
  /** Container processes only. */
  cwd?: string;
  /** tty_nr from /proc/<pid>/stat; 0 = no controlling terminal. */
  tty: number;
  /** fd 0 or fd 1 is a socket (typical of reverse shells); container processes only. */
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
  /** Per-CPU exec readers running (0 when perCpuReaders is off or none could be set up). */
  perCpuReaders: number;
  unresolved: number;
  /** Events waiting in the native queue. */
  queued: number;
}

export interface ProcConnectorOptions {
  /** Socket receive buffer to ask for; default 16 MiB (SO_RCVBUFFORCE, else SO_RCVBUF). */
  rcvbufBytes?: number;
  /** Native queue capacity in events; default 32768 (about 6 s of a 1,700 exec/s storm, typically ~15 MB). */
  queueCapacity?: number;
  /** Run the reader threads SCHED_FIFO when permitted; default true. */
  realtime?: boolean;
  /**
   * Read each exec's /proc entries on a thread pinned to the CPU the exec ran on; default true. A reader woken
   * on another, idle CPU lost the race with short-lived programs (0.5-15% of a storm's /usr/bin/true here); one on
   * the exec's own CPU preempts the new program before it can exit. Off: one reader thread does everything.
   */
  perCpuReaders?: boolean;
  /** Max events per onEvents call; default 512. */
  batchMax?: number;
  /**
   * Longest a queued event waits before JS is called (unless a batch fills first); default 30 ms. Each call
   * costs the agent a pass through its pipeline, so this trades latency for CPU: in `npm run bench` 20 ms cost
   * 13–19 µs more per exec than 30 ms at ~1,500 execs/s; 30 ms keeps exec-to-record p99 near 31 ms.
   */
  flushIntervalMs?: number;
}

interface NativeConnector {
  start(): void;
  stop(): void;
  stats(): ConnectorStats;
}

/**
 * A batch as the addon hands it over: SLOTS numbers per event, and the exec events' strings in order (exe,
 * comm, cwd, containerId, then `argc` args). Creating objects through N-API property by property cost more
 * than the JS that handles the events; decode() builds them with literals instead.
 */
type NativeBatchHandler = (nums: Float64Array, strs: string[]) => void;

interface NativeModule {
  ProcConnector: new (opts: ProcConnectorOptions, onEvents: NativeBatchHandler) => NativeConnector;
}

/** Slot layout of a native batch (proc_connector.cc, enum Slot and enum Flag). */
const SLOTS = 11;
const enum Slot {
  Type,
  Ts,
  Pid,
  Ppid,
  Uid,
  Loginuid,
  Tty,
  ExitCode,
  Signal,
  Flags,
  Argc,
}
const enum Flag {
  ExeDeleted = 1,
  ArgsTruncated = 2,
  StdioSocket = 4,
  Resolved = 8,
  HasCwd = 16,
}
const TYPE_FORK = 0;
const TYPE_EXEC = 1;

function decode(nums: Float64Array, strs: string[]): ConnectorEvent[] {
  const out: ConnectorEvent[] = new Array(nums.length / SLOTS);
  let si = 0;
  for (let i = 0, o = 0; o < nums.length; i++, o += SLOTS) {
    const type = nums[o + Slot.Type];
    const ts = nums[o + Slot.Ts];
    if (type === TYPE_FORK) {
      out[i] = { type: 'fork', ts, parentPid: nums[o + Slot.Ppid], childPid: nums[o + Slot.Pid] };
    } else if (type === TYPE_EXEC) {
      const flags = nums[o + Slot.Flags];
      const loginuid = nums[o + Slot.Loginuid];
      const argc = nums[o + Slot.Argc];
      out[i] = {
        type: 'exec',
        ts,
        pid: nums[o + Slot.Pid],
        ppid: nums[o + Slot.Ppid],
        uid: nums[o + Slot.Uid],
        loginuid: loginuid >= 0 ? loginuid : undefined,
        exe: strs[si],
        exeDeleted: (flags & Flag.ExeDeleted) !== 0,
        args: strs.slice(si + 4, si + 4 + argc),
        argsTruncated: (flags & Flag.ArgsTruncated) !== 0,
        comm: strs[si + 1],
        cwd: flags & Flag.HasCwd ? strs[si + 2] : undefined,
        tty: nums[o + Slot.Tty],
        stdioSocket: (flags & Flag.StdioSocket) !== 0,
        containerId: strs[si + 3],
        resolved: (flags & Flag.Resolved) !== 0,
      };
      si += 4 + argc;
    } else {
      const signal = nums[o + Slot.Signal];
      out[i] = { type: 'exit', ts, pid: nums[o + Slot.Pid], exitCode: nums[o + Slot.ExitCode], signal: signal ? signal : undefined };
    }
  }
  return out;
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
    if (opts.perCpuReaders !== undefined) nativeOpts.perCpuReaders = opts.perCpuReaders;
    if (opts.batchMax !== undefined) nativeOpts.batchMax = opts.batchMax;
    if (opts.flushIntervalMs !== undefined) nativeOpts.flushIntervalMs = opts.flushIntervalMs;
    // A throwing handler must not break the native drain loop; rethrow it
    // outside the addon's callback so it surfaces as an ordinary uncaught error.
    const deliver = (nums: Float64Array, strs: string[]): void => {
      try {
        onEvents(decode(nums, strs));
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    };
    this.#native = new mod.ProcConnector(nativeOpts, deliver);
  }

  /**
   * Subscribes and starts the reader threads. Throws an Error with `code`:
   * ECONNREFUSED (not in the host network namespace), EPERM (no CAP_NET_ADMIN),
   * ETIMEDOUT (no kernel acknowledgement: not in the host pid namespace).
   */
  start(): void {
    this.#native.start();
  }

  /** Unsubscribes, joins the threads and closes the sockets. Idempotent; undelivered events are discarded. */
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
      perCpuReaders: s.perCpuReaders,
      unresolved: s.unresolved,
      queued: s.queued,
    };
  }
}
