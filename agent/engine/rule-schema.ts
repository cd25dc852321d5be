import { z } from 'zod';
import type { Severity } from '../events/types.js';

/** The one apiVersion rule files may declare; anything else is refused (a newer major would change meanings). */
export const RULES_API_VERSION = 'runwatch/v1';

/**
 * Every finding the rules engine produces. The ids are a contract with SOC analysts and alert routing:
 * add, never rename. Severities are defaults; an ImagePolicy can change them or turn a rule off.
 */
export const RULE_CATALOG = {
  'image.registry_not_approved': { severity: 'high', when: 'container start', what: 'the image comes from a registry that is not in ImagePolicy.registries' },
  'image.unprofiled': { severity: 'low', when: 'container start', what: 'no ImageProfile matches the image (no allowlist checks its activity)' },
  'image.not_pinned': { severity: 'low', when: 'container start', what: 'started by tag, not by digest, while ImagePolicy.requireDigest is true' },
  'image.stale': { severity: 'low', when: 'container start', what: 'the image was built more than ImagePolicy.maxImageAgeDays ago' },
  'image.digest_changed': { severity: 'medium', when: 'container start', what: 'a tag now runs a different image than it did before on this host' },
  'posture.privileged': { severity: 'critical', when: 'container start', what: 'the container runs --privileged' },
  'posture.root_user': { severity: 'medium', when: 'container start', what: 'the container runs as root (uid 0)' },
  'posture.added_capabilities': {
    severity: 'medium',
    when: 'container start',
    what: 'capabilities were added (high for SYS_ADMIN, SYS_PTRACE, SYS_MODULE, NET_ADMIN, ALL …)',
  },
  'posture.host_namespace': { severity: 'high', when: 'container start', what: "the container shares the host's pid, net, ipc, uts or user namespace" },
  'posture.sensitive_mount': {
    severity: 'high',
    when: 'container start',
    what: 'a sensitive host path is bind-mounted (critical for runtime sockets, "/" and Docker\'s data)',
  },
  'posture.writable_rootfs': { severity: 'low', when: 'container start', what: 'the root filesystem is writable (no --read-only)' },
  'posture.secret_in_env': {
    severity: 'medium',
    when: 'container start',
    what: 'environment variable names look like secrets (values are never read or shown)',
  },
  'process.not_allowed': { severity: 'high', when: 'process exec', what: 'the executable (or busybox applet) is not in process.allow' },
  'process.drift': { severity: 'high', when: 'process exec', what: 'the executable is not from the image: it was written after the container started' },
  'process.unresolved': {
    severity: 'medium',
    when: 'process exec',
    what: 'an exec whose executable could not be read (the process exited first) and whose task name is no program process.allow names',
  },
  'file.write_not_allowed': { severity: 'medium', when: 'file change', what: 'a path outside files.write was created, modified, deleted or chmod-ed' },
  'network.listen_not_allowed': { severity: 'medium', when: 'socket seen', what: 'a listening port not in network.listen' },
  'network.connect_not_allowed': { severity: 'high', when: 'socket seen', what: 'an outbound connection not in network.connect' },
  'resource.cpu_high': {
    severity: 'low',
    when: 'resource sample',
    what: "CPU use above the threshold (config metrics.cpuHighPercent or the profile's resources)",
  },
  'resource.memory_high': {
    severity: 'medium',
    when: 'resource sample',
    what: "memory use above the threshold (config metrics.memoryHighPercent or the profile's resources)",
  },
} as const satisfies Record<string, { severity: Severity; when: string; what: string }>;

export type RuleId = keyof typeof RULE_CATALOG;
export const RULE_IDS = Object.keys(RULE_CATALOG) as RuleId[];

/** A detection id: "<set>.<name>" in lower case. */
export const DETECTION_ID = /^[a-z][a-z0-9_]*\.[a-z0-9_]+$/;

/**
 * Sets whose ids runwatch itself produces (the catalog above, the audit trail, sensor notices). A
 * detection may not use them, so an ImagePolicy.severities key in one of them is a built-in rule id or
 * a typo, never a detection.
 */
export const RESERVED_RULE_SETS: ReadonlySet<string> = new Set([...RULE_IDS.map(ruleSet), 'audit', 'sensor', 'rules']);

/** The set of a rule or detection id: "baseline" for baseline.shell_from_server. */
export function ruleSet(id: string): string {
  return id.slice(0, id.indexOf('.'));
}

const severity = z.enum(['info', 'low', 'medium', 'high', 'critical']);
const severityOrOff = z.union([severity, z.literal('off')]).meta({ id: 'SeverityOrOff', description: 'A severity, or "off" to turn the rule off.' });
const nonEmpty = z.string().min(1);
const header = { apiVersion: z.literal(RULES_API_VERSION).describe('Always "runwatch/v1".') };

const processEntry = z.union([
  nonEmpty.describe('Glob over the executable\'s absolute path inside the container, e.g. "/usr/sbin/nginx" or "/usr/lib/postgresql/*/bin/*".'),
  z
    .strictObject({
      exe: nonEmpty.describe('Glob over the executable path, e.g. "/bin/busybox".'),
      names: z.array(nonEmpty).min(1).describe('Program names (argv[0] base names, i.e. busybox applets) allowed through this executable.'),
    })
    .describe('A multi-call binary (busybox, toybox) allowed only for some program names.'),
]);

export const imageProfileSchema = z
  .strictObject({
    ...header,
    kind: z.literal('ImageProfile'),
    name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a profile name is letters, digits, ".", "_" and "-"')
      .describe('Unique name; other profiles extend it by this name and every alert carries it.'),
    description: z.string().optional(),
    images: z
      .array(nonEmpty)
      .default([])
      .describe(
        'Globs over normalised image references (docker.io/library/nginx:1.27); a repository without tag covers every tag and digest. Empty for a base profile that is only extended.',
      ),
    extends: z.array(nonEmpty).default([]).describe('Profiles whose lists this one inherits.'),
    mode: z.enum(['monitor']).default('monitor').describe('monitor = alert (enforce comes later).'),
    process: z
      .strictObject({
        allow: z.array(processEntry).default([]),
        drift: z.enum(['alert', 'ignore']).optional().describe('process.drift for executables written after start (default alert).'),
      })
      .optional(),
    files: z.strictObject({ write: z.array(nonEmpty).default([]).describe('Path globs the container may create, modify, chmod or delete.') }).optional(),
    network: z
      .strictObject({
        listen: z.array(nonEmpty).default([]).describe('"proto:port", "proto:addr:port" or "*"; proto tcp|udp|*; port N, N-M or *.'),
        connect: z.array(nonEmpty).default([]).describe('"proto:addr-or-CIDR:port" or "*"; IPv6 in brackets: "tcp:[fd00::/8]:443".'),
      })
      .optional(),
    posture: z
      .strictObject({
        allowRoot: z.boolean().optional(),
        allowPrivileged: z.boolean().optional(),
        allowWritableRootfs: z.boolean().optional(),
        allowCapabilities: z.array(nonEmpty).optional().describe('Capability names without CAP_, e.g. NET_ADMIN.'),
        allowHostNamespaces: z.array(z.enum(['pid', 'net', 'ipc', 'uts', 'userns'])).optional(),
        allowMounts: z.array(nonEmpty).optional().describe('Globs over host paths of bind mounts.'),
        allowSecretEnv: z.array(nonEmpty).optional().describe('Environment variable names (globs) that may look like secrets.'),
      })
      .optional()
      .describe('Per-image exceptions to posture findings.'),
    resources: z
      .strictObject({
        cpuHighPercent: z.number().positive().optional(),
        memoryHighPercent: z.number().positive().max(100).optional(),
      })
      .optional()
      .describe('Thresholds for resource.cpu_high / resource.memory_high, overriding config metrics.*HighPercent.'),
    detections: z
      .strictObject({ disable: z.array(nonEmpty).default([]).describe('Detection ids (e.g. baseline.package_manager) that never fire for this image.') })
      .optional()
      .describe('Turns Detection rules off for containers of this profile (inherited through extends).'),
  })
  .describe('An allowlist of what containers of some images may do.');

export const imagePolicySchema = z
  .strictObject({
    ...header,
    kind: z.literal('ImagePolicy'),
    registries: z.array(nonEmpty).min(1).optional().describe('Approved registries (globs over the registry host, "docker.io" for Docker Hub). Absent = any.'),
    unprofiled: z.enum(['alert', 'ignore']).default('alert').describe('image.unprofiled for containers whose image matches no profile.'),
    requireDigest: z.boolean().default(false).describe('image.not_pinned when a container was started by tag.'),
    maxImageAgeDays: z.number().positive().optional().describe('image.stale when the image was built longer ago than this.'),
    severities: z
      .object(Object.fromEntries(RULE_IDS.map((id) => [id, severityOrOff.optional()])) as Record<RuleId, z.ZodOptional<typeof severityOrOff>>)
      .catchall(severityOrOff)
      .superRefine((value, ctx) => {
        // Other keys are detection ids; the compiler checks them against the detections loaded.
        const unknown = Object.keys(value).filter((k) => !(k in RULE_CATALOG) && (!DETECTION_ID.test(k) || RESERVED_RULE_SETS.has(ruleSet(k))));
        if (unknown.length) ctx.addIssue({ code: 'unrecognized_keys', keys: unknown, input: value });
      })
      .default({})
      .describe('Per rule id or detection id (e.g. baseline.package_manager): another severity, or "off".'),
  })
  .describe('Host-wide image policy; at most one per ruleset.');

export const detectionSchema = z
  .strictObject({
    ...header,
    kind: z.literal('Detection'),
    id: z
      .string()
      .regex(DETECTION_ID, 'a detection id is "<set>.<name>" in lower case, e.g. baseline.shell_from_server')
      .refine((id) => !RESERVED_RULE_SETS.has(ruleSet(id)), {
        error: (issue) =>
          `"${ruleSet(String(issue.input))}." is for runwatch's own rule ids (as are ${[...RESERVED_RULE_SETS].join(', ')}); pick another set name`,
      })
      .describe('The rule id every finding carries, e.g. baseline.shell_from_server.'),
    title: nonEmpty.describe('Title Case name, e.g. "Shell Spawned By A Server Process"; starts each alert message.'),
    description: z
      .string()
      .regex(/^Detect /, 'a description starts with "Detect "')
      .describe('One line starting with "Detect".'),
    severity,
    mitre: z
      .string()
      .regex(/^T\d{4}(\.\d{3})?$/, 'a MITRE ATT&CK technique id, e.g. T1059.004')
      .describe('MITRE ATT&CK technique id.'),
    on: z.enum(['process_exec', 'file_change', 'net_socket', 'docker_action']).describe('The event kind the condition looks at.'),
    when: z
      .unknown()
      .describe(
        'Condition: { all: [...] }, { any: [...] }, { not: ... } or a mapping of field → glob, list of globs or boolean (every key must hold). See docs/detections.md.',
      ),
    except: z
      .strictObject({
        images: z.array(nonEmpty).default([]).describe('Image reference globs, as in ImageProfile.images.'),
        profiles: z.array(nonEmpty).default([]).describe('Profile names.'),
      })
      .optional(),
  })
  .describe('A known-bad behaviour checked in every container, profiled or not.');

export type ImageProfileDoc = z.output<typeof imageProfileSchema>;
export type DetectionDoc = z.output<typeof detectionSchema>;
export type ImagePolicyDoc = z.output<typeof imagePolicySchema>;

/**
 * Rule document kinds, dispatched on `kind`. A new kind (e.g. Detection) adds its schema here and its
 * compile step in rule-compiler.ts.
 */
export const RULE_KIND_SCHEMAS = {
  ImageProfile: imageProfileSchema,
  ImagePolicy: imagePolicySchema,
  Detection: detectionSchema,
} as const;

export type RuleKind = keyof typeof RULE_KIND_SCHEMAS;
export const RULE_KINDS = Object.keys(RULE_KIND_SCHEMAS) as RuleKind[];

export type RuleDoc = { kind: 'ImageProfile'; doc: ImageProfileDoc } | { kind: 'ImagePolicy'; doc: ImagePolicyDoc } | { kind: 'Detection'; doc: DetectionDoc };

/** JSON Schema of one rule document, for editors (yaml-language-server applies it per document). */
export function rulesJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(z.discriminatedUnion('kind', [imageProfileSchema, imagePolicySchema, detectionSchema]), { io: 'input' });
  return { ...schema, title: 'runwatch rule document (ImageProfile | ImagePolicy | Detection)' };
}
