import { Minimatch } from 'minimatch';
import type { ContainerInfo, Finding, Severity } from '../events/types.js';
import { capitalise, finding, globLiteral, where, yamlItem, yamlScalar } from './findings.js';
import type { ImageSighting } from './engine.js';
import { parseImageRef } from './image-ref.js';
import { GLOB_OPTIONS } from './path-matcher.js';
import type { CompiledProfile, Ruleset } from './ruleset.js';

/** Linux capability names as Docker takes them (without CAP_), plus ALL. */
export const CAPABILITIES = new Set([
  'ALL',
  'AUDIT_CONTROL',
  'AUDIT_READ',
  'AUDIT_WRITE',
  'BLOCK_SUSPEND',
  'BPF',
  'CHECKPOINT_RESTORE',
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'IPC_LOCK',
  'IPC_OWNER',
  'KILL',
  'LEASE',
  'LINUX_IMMUTABLE',
  'MAC_ADMIN',
  'MAC_OVERRIDE',
  'MKNOD',
  'NET_ADMIN',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_RAW',
  'PERFMON',
  'SETFCAP',
  'SETGID',
  'SETPCAP',
  'SETUID',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_CHROOT',
  'SYS_MODULE',
  'SYS_NICE',
  'SYS_PACCT',
  'SYS_PTRACE',
  'SYS_RAWIO',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'SYSLOG',
  'WAKE_ALARM',
]);

export function normaliseCapability(name: string): string {
  return name.toUpperCase().replace(/^CAP_/, '');
}

/** Capabilities Docker grants by default: adding one of them changes nothing, so it is not reported. */
export const DOCKER_DEFAULT_CAPABILITIES = new Set([
  'CHOWN',
  'DAC_OVERRIDE',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
  'SETPCAP',
  'NET_BIND_SERVICE',
  'NET_RAW',
  'SYS_CHROOT',
  'MKNOD',
  'AUDIT_WRITE',
  'SETFCAP',
]);

/** Capabilities that make a container escape or host tampering straightforward: posture.added_capabilities is high. */
export const DANGEROUS_CAPABILITIES = new Set([
  'ALL',
  'SYS_ADMIN',
  'SYS_PTRACE',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_BOOT',
  'SYS_TIME',
  'DAC_READ_SEARCH',
  'NET_ADMIN',
  'BPF',
  'PERFMON',
  'MAC_ADMIN',
  'MAC_OVERRIDE',
  'SYSLOG',
]);

/** Host paths whose bind mount is reported, first match wins; type "bind" mounts only (volumes live under /var/lib/docker). */
export const SENSITIVE_MOUNTS: { glob: string; severity: Severity; why: string }[] = [
  { glob: '/', severity: 'critical', why: "the host's whole filesystem" },
  {
    glob: '/**/{docker,containerd,crio,podman,dockershim,cri-dockerd}.sock',
    severity: 'critical',
    why: 'a container runtime API socket gives control of the host',
  },
  { glob: '/{var/,}run/{docker,containerd,crio,podman}{,/**}', severity: 'critical', why: "the container runtime's state and sockets" },
  { glob: '/var/lib/{docker,containerd,kubelet}{,/**}', severity: 'critical', why: "the container runtime's data (other containers' filesystems)" },
  { glob: '/proc{,/**}', severity: 'high', why: "the host's /proc (kernel settings, other processes)" },
  { glob: '/sys{,/**}', severity: 'high', why: "the host's /sys (kernel and device settings)" },
  { glob: '/dev{,/mem,/kmem,/port,/sd*,/nvme*,/disk/**}', severity: 'high', why: "the host's devices" },
  {
    glob: '/etc{,/shadow,/gshadow,/passwd,/group,/sudoers,/sudoers.d{,/**},/ssh{,/**},/kubernetes{,/**},/cron*{,/**},/systemd{,/**}}',
    severity: 'high',
    why: "the host's users, credentials or services",
  },
  { glob: '/root{,/**}', severity: 'high', why: "root's home (SSH keys, credentials)" },
  { glob: '/home{,/*/.ssh{,/**}}', severity: 'high', why: 'home folders (SSH keys, credentials)' },
  { glob: '/{boot,lib/modules,usr/lib/modules}{,/**}', severity: 'high', why: 'the kernel and its modules' },
  { glob: '/{usr,bin,sbin,lib,lib64,var,run,var/run,var/log}', severity: 'high', why: 'a host system folder' },
];
const SENSITIVE_MOUNT_RES = SENSITIVE_MOUNTS.map((m) => ({ ...m, re: new Minimatch(m.glob, GLOB_OPTIONS).makeRe() as RegExp }));

/**
 * Variable names that look like secrets: one of these words as a whole "_"-separated part of the name.
 * Names ending in _FILE point to a secret file (the good practice) and are not reported.
 */
const SECRET_NAME =
  /(^|_)(PASSWORD|PASSWD|PASS|PWD|SECRET|SECRETS|TOKEN|APIKEY|API_KEY|ACCESS_KEY|ACCESSKEY|PRIVATE_KEY|PRIVATEKEY|CREDENTIAL|CREDENTIALS|CONNECTION_STRING|CONNSTR|AUTH_KEY|CLIENT_SECRET|SAS)(_|$)/;
const NOT_SECRET = new Set(['PWD', 'OLDPWD']);

export function looksLikeSecret(name: string): boolean {
  const n = name.toUpperCase();
  return !NOT_SECRET.has(n) && !n.endsWith('_FILE') && SECRET_NAME.test(n);
}

export function isRootUser(user: string): boolean {
  const u = user.split(':')[0];
  return u === '' || u === '0' || u === 'root';
}

/** The user a container runs as: its own setting, else the image's, else root. */
export function effectiveUser(info: ContainerInfo): string {
  return info.user || info.imageUser || '';
}

function normaliseHostPath(p: string): string {
  const s = p.replace(/\/+$/, '');
  return s === '' ? '/' : s;
}

const DAY_MS = 86_400_000;

/** Image policy and posture findings for a container, assessed once (see decide.ts). */
export function containerFindings(rs: Ruleset, info: ContainerInfo, now: number, previous: ImageSighting | undefined): Finding[] {
  const out: Finding[] = [];
  const add = (f: Finding | undefined) => {
    if (f) out.push(f);
  };
  const match = rs.profileFor(info);
  const p = match?.profile;
  const W = capitalise(where(info));
  const ref = parseImageRef(info.image);
  const profile = p ? { profile: p.name } : {};
  const policy = rs.policy;

  if (policy.registries && ref.registry !== undefined && !policy.registries.matches(ref.registry)) {
    add(
      finding(rs, 'image.registry_not_approved', {
        message: `${W} runs ${ref.normalised} from registry ${ref.registry}, which is not an approved registry (${policy.registryList!.join(', ')})`,
        ...profile,
        decidedBy: 'ImagePolicy.registries',
        allowHint: yamlItem(ref.registry),
        details: { registry: ref.registry },
        subject: ref.registry,
      }),
    );
  }
  if (!match && policy.unprofiled === 'alert') {
    const suggestion = ref.byId ? ref.normalised : ref.repository;
    add(
      finding(rs, 'image.unprofiled', {
        message: `${W} runs ${ref.normalised}, which matches no ImageProfile: no allowlist checks its processes, files and network`,
        decidedBy: 'ImagePolicy.unprofiled',
        allowHint: `images: [${yamlScalar(suggestion)}]`,
        subject: ref.repository,
      }),
    );
  }
  if (policy.requireDigest && !ref.digest && !ref.byId) {
    add(
      finding(rs, 'image.not_pinned', {
        message: `${W} was started from tag ${ref.normalised}, not from a digest (ImagePolicy requireDigest)`,
        ...profile,
        decidedBy: 'ImagePolicy.requireDigest',
        allowHint: 'requireDigest: false',
        subject: ref.repository,
      }),
    );
  }
  if (policy.maxImageAgeDays !== undefined && info.imageCreated) {
    const built = Date.parse(info.imageCreated);
    const ageDays = (now - built) / DAY_MS;
    if (Number.isFinite(ageDays) && ageDays > policy.maxImageAgeDays) {
      add(
        finding(rs, 'image.stale', {
          message: `${W} runs an image built ${Math.floor(ageDays)} days ago (${info.imageCreated.slice(0, 10)}), older than maxImageAgeDays ${policy.maxImageAgeDays}`,
          ...profile,
          decidedBy: 'ImagePolicy.maxImageAgeDays',
          allowHint: `maxImageAgeDays: ${Math.ceil(ageDays)}`,
          details: { ageDays: Math.floor(ageDays), imageCreated: info.imageCreated },
          subject: info.imageId,
        }),
      );
    }
  }
  if (previous && previous.imageId !== info.imageId) {
    const was = previous.digest ?? previous.imageId;
    const now_ = info.imageDigest ?? info.imageId;
    add(
      finding(rs, 'image.digest_changed', {
        message: `Tag ${ref.normalised} now runs image ${short(now_)} in ${where(info)}; on this host it ran ${short(was)} since ${previous.since}`,
        ...profile,
        decidedBy: 'ImagePolicy.severities',
        allowHint: 'image.digest_changed: "off"',
        details: {
          previousImageId: previous.imageId,
          imageId: info.imageId,
          ...(previous.digest && { previousDigest: previous.digest }),
          ...(info.imageDigest && { digest: info.imageDigest }),
        },
        subject: `${ref.normalised}\0${info.imageId}`,
      }),
    );
  }
  postureFindings(rs, info, p, add);
  return out;
}

function short(idOrDigest: string): string {
  const at = idOrDigest.indexOf('sha256:');
  return at >= 0 ? idOrDigest.slice(0, at + 7 + 12) : idOrDigest;
}

function postureFindings(rs: Ruleset, info: ContainerInfo, p: CompiledProfile | undefined, add: (f: Finding | undefined) => void): void {
  const W = capitalise(where(info));
  const profile = p ? { profile: p.name } : {};
  const allow = p?.posture;

  if (info.privileged && !allow?.allowPrivileged) {
    add(
      finding(rs, 'posture.privileged', {
        message: `${W} runs privileged: every capability, every host device, no seccomp or AppArmor confinement`,
        ...profile,
        decidedBy: 'posture.allowPrivileged',
        allowHint: 'allowPrivileged: true',
        subject: 'privileged',
      }),
    );
  }
  const user = effectiveUser(info);
  if (isRootUser(user) && !allow?.allowRoot) {
    const how = info.user ? `user "${info.user}"` : info.imageUser ? `the image's user "${info.imageUser}"` : 'no user set, so the image default root';
    add(
      finding(rs, 'posture.root_user', {
        message: `${W} runs as root (${how})`,
        ...profile,
        decidedBy: 'posture.allowRoot',
        allowHint: 'allowRoot: true',
        details: { user: user || 'root' },
        subject: 'root',
      }),
    );
  }
  const caps = [...new Set(info.capAdd.map(normaliseCapability))]
    .filter((c) => (c === 'ALL' || !DOCKER_DEFAULT_CAPABILITIES.has(c)) && !allow?.capabilities.has(c))
    .sort();
  if (caps.length) {
    const dangerous = caps.some((c) => DANGEROUS_CAPABILITIES.has(c));
    add(
      finding(
        rs,
        'posture.added_capabilities',
        {
          message: `${W} adds capabilities ${caps.join(', ')}`,
          ...profile,
          decidedBy: 'posture.allowCapabilities',
          allowHint: `allowCapabilities: [${caps.join(', ')}]`,
          details: { capabilities: caps.join(',') },
          subject: caps.join(','),
        },
        dangerous ? 'high' : 'medium',
      ),
    );
  }
  const shared = (Object.keys(info.hostNamespaces) as (keyof ContainerInfo['hostNamespaces'])[]).filter(
    (ns) => info.hostNamespaces[ns] && !allow?.hostNamespaces.has(ns),
  );
  if (shared.length) {
    add(
      finding(rs, 'posture.host_namespace', {
        message: `${W} shares the host's ${shared.join(', ')} namespace${shared.length > 1 ? 's' : ''}`,
        ...profile,
        decidedBy: 'posture.allowHostNamespaces',
        allowHint: `allowHostNamespaces: [${shared.join(', ')}]`,
        details: { namespaces: shared.join(',') },
        subject: shared.join(','),
      }),
    );
  }
  for (const m of info.mounts) {
    if (m.type !== 'bind') continue;
    const source = normaliseHostPath(m.source);
    const hit = SENSITIVE_MOUNT_RES.find((s) => s.re.test(source));
    if (!hit || allow?.mounts.matches(source)) continue;
    add(
      finding(
        rs,
        'posture.sensitive_mount',
        {
          message: `${W} mounts host path ${source} at ${m.destination} (${m.readOnly ? 'read-only' : 'read-write'}): ${hit.why}`,
          ...profile,
          decidedBy: 'posture.allowMounts',
          allowHint: `allowMounts: [${yamlScalar(globLiteral(source))}]`,
          details: { source, destination: m.destination, readOnly: m.readOnly },
          subject: source,
        },
        hit.severity,
      ),
    );
  }
  if (!info.readOnlyRootfs && !allow?.allowWritableRootfs) {
    add(
      finding(rs, 'posture.writable_rootfs', {
        message: `${W} has a writable root filesystem (not started with --read-only)`,
        ...profile,
        decidedBy: 'posture.allowWritableRootfs',
        allowHint: 'allowWritableRootfs: true',
        subject: 'rootfs',
      }),
    );
  }
  const secrets = info.envNames.filter((n) => looksLikeSecret(n) && !allow?.secretEnv.matches(n)).sort();
  if (secrets.length) {
    add(
      finding(rs, 'posture.secret_in_env', {
        message: `${W} has secret-looking environment variable${secrets.length > 1 ? 's' : ''} ${secrets.join(', ')} (values not read); pass secrets as files instead (e.g. ${secrets[0]}_FILE)`,
        ...profile,
        decidedBy: 'posture.allowSecretEnv',
        allowHint: `allowSecretEnv: [${secrets.map(yamlScalar).join(', ')}]`,
        details: { names: secrets.join(',') },
        subject: secrets.join(','),
      }),
    );
  }
}
