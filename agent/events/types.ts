/**
 * The one event model. Sensors produce these, the pipeline enriches them, the engine decides on them.
 * Every event carries `ts` as epoch milliseconds (never bigint: JSON.stringify throws on it).
 */

/** What a record names about a container; the subset of {@link ContainerInfo} every record carries. */
export interface ContainerRef {
  /** 64 hex characters. */
  id: string;
  name: string;
  /** Reference as the container was started, e.g. "acr.example.io/web:1". */
  image: string;
  /** "sha256:…" */
  imageId: string;
  /** Repo digest ("name@sha256:…") of the image, where the engine knows one. */
  imageDigest?: string;
  labels?: Record<string, string>;
}

export interface MountInfo {
  type: string;
  source: string;
  destination: string;
  readOnly: boolean;
}

/** Everything the Docker sensor learns about a container from inspect; kept in the inventory. */
export interface ContainerInfo extends ContainerRef {
  /** All repo digests of the image ("name@sha256:…"). */
  imageRepoDigests: string[];
  /** Image build time (ISO), from image inspect. */
  imageCreated?: string;
  created: string;
  startedAt?: string;
  running: boolean;
  /** Host pid of the container's init process; 0 when not running. */
  pid: number;
  /** Configured user ("" = image default = root unless the image says otherwise). */
  user: string;
  /** The image's own configured user, for resolving "" above. */
  imageUser?: string;
  privileged: boolean;
  capAdd: string[];
  capDrop: string[];
  hostNamespaces: { pid: boolean; net: boolean; ipc: boolean; uts: boolean; userns: boolean };
  /** e.g. "none", "host", "bridge", "container:<id>". */
  networkMode: string;
  mounts: MountInfo[];
  readOnlyRootfs: boolean;
  /** Names only: values are never kept. */
  envNames: string[];
  /** overlay2 paths on the host; absent for other storage drivers. */
  upperDir?: string;
  /** overlay2 lower layers (the image, plus Docker's init layer), topmost first; for telling a created file from a changed one. */
  lowerDirs?: string[];
  mergedDir?: string;
  cgroupParent?: string;
  /** Memory limit in bytes, 0 = none. */
  memoryLimit: number;
  /** CPU limit in cores (NanoCpus or quota/period), 0 = none. */
  cpuLimit: number;
}

interface EventBase {
  ts: number;
  /** Host pid-namespace-independent container id (64 hex), when the sensor knows it. */
  containerId?: string;
  /** Filled by the pipeline's enrichment stage from the inventory. */
  container?: ContainerRef;
}

export type ContainerLifecycleAction = 'create' | 'start' | 'restart' | 'pause' | 'unpause' | 'die' | 'stop' | 'destroy' | 'rename' | 'update';

/** A container entering or leaving the inventory, or changing state. */
export interface ContainerLifecycleEvent extends EventBase {
  kind: 'container';
  action: ContainerLifecycleAction;
  containerId: string;
  /** Snapshot after the change (absent for destroy when it was never inspected). */
  info?: ContainerInfo;
  /** Already running when the agent (re)started, found by listing rather than by an event. */
  discovered?: boolean;
  /** Made up by reconciliation after the daemon lost its event history (e.g. restart). */
  synthesized?: boolean;
  exitCode?: number;
}

/** An administrative action through the Docker API (exec, attach, cp, kill, image pull …). */
export interface DockerActionEvent extends EventBase {
  kind: 'docker_action';
  scope: 'container' | 'image';
  /** Docker's action name with any ": detail" suffix removed, e.g. "exec_create", "archive-path", "pull". */
  action: string;
  execId?: string;
  /** For exec_create: the command line. */
  command?: string;
  /** For image actions: the image reference or id. */
  image?: string;
  /** For kill: the signal. */
  signal?: string;
  /** Who ran it on the host, where the process sensor could tell. */
  hostUser?: HostUser;
  /** Docker's own attributes of the event, for forensics. */
  attributes?: Record<string, string>;
}

export interface HostUser {
  uid: number;
  loginuid?: number;
  user?: string;
  tty?: string;
  pid?: number;
  command?: string;
}

export interface ProcessAncestor {
  pid: number;
  exe: string;
  comm?: string;
}

export interface ProcessExecEvent extends EventBase {
  kind: 'process_exec';
  pid: number;
  ppid: number;
  /** Absolute executable path inside the container ("" when it could not be read). */
  exe: string;
  args: string[];
  /** argv[0] as the process gave it (may differ from exe through links or renames). */
  argv0?: string;
  /** Kernel task name (/proc/<pid>/comm). */
  comm?: string;
  uid: number;
  user?: string;
  cwd?: string;
  tty?: string;
  /** Nearest first. */
  ancestors: ProcessAncestor[];
  /** False when the process exited before exe/args could be read. */
  resolved: boolean;
  /** The executable is in the container's writable layer (written after start). */
  inUpperLayer?: boolean;
  /** The executable was deleted or is a memfd (fileless). */
  exeDeleted?: boolean;
  /** fd 0 or 1 is a network socket. */
  stdioSocket?: boolean;
}

export interface ProcessExitEvent extends EventBase {
  kind: 'process_exit';
  pid: number;
  exitCode?: number;
}

export type FileOp = 'create' | 'modify' | 'delete' | 'chmod';

export interface FileChangeEvent extends EventBase {
  kind: 'file_change';
  containerId: string;
  /** Absolute path inside the container. */
  path: string;
  op: FileOp;
  /** File mode after the change (st_mode, type bits included), where known. */
  mode?: number;
  /** For chmod: the mode before (the last known one, or the image's at a copy-up), so a detection can tell a setuid bit newly set. */
  previousMode?: number;
  /** For chmod: set when the change was an ownership change (chown), with the ids before and after. */
  owner?: { uid: number; gid: number; previousUid: number; previousGid: number };
  /** For a symlink: its target. */
  linkTarget?: string;
  /** Number of hard links, where > 1 suggests a link over another file (then `linkTarget` names another path of the same file, when known). */
  nlink?: number;
  /** The directory the change is grouped under: its parent directory, cut to `sensors.file.groupDepth` levels. Use as the alert subject so a write storm becomes few grouped alerts. */
  pathPrefix?: string;
  /** Found by reading the layer when watching began (agent start, container (re)start), not seen as it happened. */
  discovered?: boolean;
  /** The process that was running in the container, where the process sensor knows it. */
  process?: ProcessSummary;
}

export interface ProcessSummary {
  pid: number;
  exe: string;
  args?: string[];
}

export type NetProtocol = 'tcp' | 'tcp6' | 'udp' | 'udp6';

export interface NetSocketEvent extends EventBase {
  kind: 'net_socket';
  containerId: string;
  protocol: NetProtocol;
  direction: 'listen' | 'connect';
  /** "addr:port", IPv6 as "[addr]:port". */
  local: string;
  remote?: string;
  state?: string;
  process?: ProcessSummary;
}

export interface ResourceSampleEvent extends EventBase {
  kind: 'resource_sample';
  scope: 'container' | 'host';
  /** CPU use in cores (1.0 = one full core) over the last interval. */
  cpuCores?: number;
  /** CPU use as a percentage of the limit (or of the host's cores when there is none). */
  cpuPercent?: number;
  /** Usage minus inactive file cache (as `docker stats` shows it); host: total minus available. */
  memoryBytes?: number;
  /** Absent when the container has no memory limit (memoryPercent is then of the host's memory). */
  memoryLimitBytes?: number;
  memoryPercent?: number;
  /** Cumulative since the container (host: boot) started, every interface but lo; absent for host/container: network modes. */
  networkRxBytes?: number;
  networkTxBytes?: number;
  /** Cumulative since the container started. */
  blockReadBytes?: number;
  blockWriteBytes?: number;
  pids?: number;
  /** Host scope only. */
  load1?: number;
  diskUsedBytes?: number;
  diskTotalBytes?: number;
}

/**
 * Something the agent itself has to tell: lost events, a failed rules reload, spool eviction.
 * Always becomes an audit record with `rule` as given.
 */
export interface AgentNoticeEvent extends EventBase {
  kind: 'agent_notice';
  rule: string;
  severity: Severity;
  message: string;
  details?: Record<string, string | number | boolean>;
}

export type RunwatchEvent =
  ContainerLifecycleEvent | DockerActionEvent | ProcessExecEvent | ProcessExitEvent | FileChangeEvent | NetSocketEvent | ResourceSampleEvent | AgentNoticeEvent;

export type EventKind = RunwatchEvent['kind'];

export type Severity = 'info' | 'low' | 'medium' | 'high' | 'critical';

export const SEVERITIES: readonly Severity[] = ['info', 'low', 'medium', 'high', 'critical'];

/**
 * The record that leaves the agent (JSON lines, Azure custom events, OTLP logs).
 * A contract with SOC analysts: extend it, never rename.
 */
export interface RunwatchRecord {
  /** ISO-8601 UTC. */
  time: string;
  kind: 'alert' | 'audit';
  host: string;
  rule: string;
  severity: Severity;
  message: string;
  container?: ContainerRef;
  profile?: string;
  process?: {
    pid: number;
    ppid: number;
    exe: string;
    args: string[];
    uid: number;
    user?: string;
    argv0?: string;
    /** The kernel's task name: what is known of the program when its executable could not be read. */
    comm?: string;
    tty?: string;
    cwd?: string;
    /** Present (false) only when the process was gone before its executable could be read. */
    resolved?: false;
    ancestors: ProcessAncestor[];
  };
  file?: { path: string; op: FileOp; mode?: string; linkTarget?: string };
  network?: { protocol: string; direction: 'listen' | 'connect'; local: string; remote?: string };
  docker?: { action: string; execId?: string; command?: string; image?: string; hostUser?: HostUser };
  /** The list that decided (e.g. "process.allow") and the entry a rule writer would add to allow it. */
  decidedBy?: string;
  allowHint?: string;
  /** MITRE ATT&CK technique id for baseline detections. */
  mitre?: string;
  /** Extra facts of the finding (e.g. a capability list, a mount path). */
  details?: Record<string, string | number | boolean>;
  /** Set when repeats are grouped. */
  count?: number;
  firstSeen?: string;
  lastSeen?: string;
  /** Stable id of the record, for de-duplication downstream. */
  id: string;
}

/** What the engine concludes about one event; the pipeline turns each finding into a record. */
export interface Finding {
  kind: 'alert' | 'audit';
  rule: string;
  severity: Severity;
  message: string;
  profile?: string;
  decidedBy?: string;
  allowHint?: string;
  mitre?: string;
  details?: Record<string, string | number | boolean>;
  /** What identifies "the same alert" for grouping (e.g. the exe path or a path prefix). */
  subject?: string;
}

export function assertNever(x: never, what = 'value'): never {
  throw new Error(`unexpected ${what}: ${JSON.stringify(x)}`);
}
