import { z } from 'zod';

/**
 * The one config schema. Every default lives here; config.example.yaml documents the same keys
 * (a unit test checks that the example validates and lists every key). Unknown keys are errors.
 */
const obj = z.strictObject;
const positiveInt = z.number().int().positive();

export const configSchema = obj({
  /** Host name put on every record; "" = the machine's hostname. */
  host: z.string().default(''),
  /** Where the agent keeps state (spool, image digest history). */
  stateDir: z.string().min(1).default('/var/lib/runwatch'),
  log: obj({
    level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  }).prefault({}),
  docker: obj({
    socket: z.string().min(1).default('/var/run/docker.sock'),
    /** Wait (retrying) for the daemon at start instead of exiting. */
    waitForDaemon: z.boolean().default(false),
    reconnectInitialDelayMs: positiveInt.default(250),
    reconnectMaxDelayMs: positiveInt.default(10_000),
  }).prefault({}),
  rules: obj({
    /** Rule files or folders; "" entries are ignored. Default: the rules/ folder shipped with runwatch. */
    paths: z.array(z.string()).default([]),
    /** Hot-reload rule files when they change. */
    watch: z.boolean().default(true),
    /** Changes to rule files within this window are reloaded together. */
    reloadDebounceMs: positiveInt.default(300),
  }).prefault({}),
  pipeline: obj({
    queueCapacity: positiveInt.default(65_536),
    /** Identical alerts within this window go out once, with count/firstSeen/lastSeen. */
    groupWindowSeconds: z.number().nonnegative().default(60),
  }).prefault({}),
  outputs: obj({
    stdout: obj({ enabled: z.boolean().default(true) }).prefault({}),
    jsonl: obj({
      /** File for JSON-lines records; "-" = stdout; "" = off. */
      path: z.string().default('/var/log/runwatch/records.jsonl'),
      fsyncIntervalMs: positiveInt.default(1000),
    }).prefault({}),
    azureMonitor: obj({
      /** Application Insights connection string; "" = off. */
      connectionString: z.string().default('${APPLICATIONINSIGHTS_CONNECTION_STRING:-}'),
      /** A file holding the connection string (e.g. a Docker secret); wins over connectionString. */
      connectionStringFile: z.string().default(''),
      /** Accept an http:// IngestionEndpoint on a loopback address (a local relay, tests); otherwise https is required. */
      allowHttpLoopback: z.boolean().default(false),
    }).prefault({}),
    otlp: obj({
      /** OTLP/HTTP base URL, e.g. http://127.0.0.1:4318; "" = off. */
      endpoint: z.string().default(''),
      headers: z.record(z.string(), z.string()).default({}),
    }).prefault({}),
    spool: obj({
      /** Upper bound of the on-disk spool; past it the oldest records are evicted (counted, reported). */
      maxBytes: positiveInt.default(256 * 1024 * 1024),
      /** Backoff between delivery attempts while an endpoint fails: doubles from the first to the last value. */
      retryInitialMs: positiveInt.default(1000),
      retryMaxMs: positiveInt.default(60_000),
      /** An export request without an answer by then counts as failed (and possibly delivered: see docs/export.md). */
      requestTimeoutMs: positiveInt.default(30_000),
    }).prefault({}),
  }).prefault({}),
  sensors: obj({
    docker: obj({ enabled: z.boolean().default(true) }).prefault({}),
    process: obj({
      enabled: z.boolean().default(true),
      /** connector = kernel netlink process connector; procfs = /proc scanning (partial coverage); auto = connector, else procfs. */
      source: z.enum(['auto', 'connector', 'procfs']).default('auto'),
      ancestors: z.number().int().min(0).max(32).default(5),
      /** Run the reader threads SCHED_FIFO (needs CAP_SYS_NICE) so short-lived processes are read before they exit. */
      realtime: z.boolean().default(true),
      /** Read each exec's /proc entries on a thread pinned to the CPU it ran on, before a short-lived program exits. */
      perCpuReaders: z.boolean().default(true),
      procfsIntervalMs: positiveInt.default(500),
      /** Record host-side `docker` CLI runs to name the host user behind `docker exec`. */
      trackDockerCli: z.boolean().default(true),
    }).prefault({}),
    file: obj({
      enabled: z.boolean().default(true),
      /** One inotify watch per directory of a container's writable layer; past a limit directories go unwatched (counted, reported). */
      maxWatchedDirsPerContainer: positiveInt.default(10_000),
      maxWatchedDirsTotal: positiveInt.default(100_000),
      /** Directory levels in a change's pathPrefix (its grouping subject): 3 groups /app/cache/a/b/f under /app/cache/a. */
      groupDepth: z.number().int().min(1).max(16).default(3),
      /** Globs (inside the container) whose changes are ignored. */
      ignore: z
        .array(z.string().startsWith('/', 'must be an absolute path glob inside the container'))
        .default(['/proc/**', '/sys/**', '/dev/**', '/run/**/*.pid', '/tmp/.X11-unix/**']),
    }).prefault({}),
    network: obj({
      enabled: z.boolean().default(true),
      intervalSeconds: z.number().positive().default(2),
    }).prefault({}),
  }).prefault({}),
  metrics: obj({
    enabled: z.boolean().default(true),
    intervalSeconds: z.number().positive().default(30),
    /** Where per-container figures come from: auto = cgroup files (cheapest), the Docker stats API for a container whose cgroup is not found. */
    source: z.enum(['auto', 'cgroup', 'docker-api']).default('auto'),
    cpuHighPercent: z.number().positive().default(90),
    memoryHighPercent: z.number().positive().max(100).default(90),
  }).prefault({}),
});

export type RunwatchConfig = z.infer<typeof configSchema>;
