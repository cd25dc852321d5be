import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { locate, parseYamlDocuments, zodIssuesToErrors, type SourcedDocument } from '../config/yaml-source.js';
import { RunwatchError, RunwatchErrors } from '../errors.js';
import type { ContainerInfo, Finding, RunwatchEvent } from '../events/types.js';
import { decide } from './decide.js';
import { loadRuleset, type CompileOptions } from './rule-compiler.js';
import { listFiles, RULE_TEST_SUFFIXES } from './rule-loader.js';
import { RULES_API_VERSION } from './rule-schema.js';
import type { Ruleset } from './ruleset.js';

/*
 * Rule tests as data: a `*.cases.yaml` file names the rules it tests, a default container, and cases of
 * one event each with the findings expected. The unit tests and `runwatch rules test` run the same files.
 */

const obj = z.strictObject;
const str = z.string();
const ts = z
  .union([z.number(), z.iso.datetime({ offset: true })])
  .optional()
  .describe('Event time: epoch ms or ISO; default 2025-06-01T00:00:00Z.');

const containerSchema = obj({
  id: str.regex(/^[0-9a-f]{64}$/).optional(),
  name: str.optional(),
  image: str.min(1).optional(),
  imageId: str.optional(),
  imageDigest: str.optional(),
  imageRepoDigests: z.array(str).optional(),
  imageCreated: str.optional(),
  user: str.optional(),
  imageUser: str.optional(),
  privileged: z.boolean().optional(),
  capAdd: z.array(str).optional(),
  hostNamespaces: obj({ pid: z.boolean(), net: z.boolean(), ipc: z.boolean(), uts: z.boolean(), userns: z.boolean() }).partial().optional(),
  networkMode: str.optional(),
  mounts: z.array(obj({ type: str.default('bind'), source: str, destination: str, readOnly: z.boolean().default(false) })).optional(),
  readOnlyRootfs: z.boolean().optional(),
  envNames: z.array(str).optional(),
  labels: z.record(str, str).optional(),
}).describe('Fields of the container the event comes from (the rest are defaults).');

const processSummary = obj({ pid: z.number().int().default(100), exe: str, args: z.array(str).optional() });

const eventSchema = z.discriminatedUnion('kind', [
  obj({
    kind: z.literal('process_exec'),
    ts,
    exe: str,
    args: z.array(str).optional(),
    argv0: str.optional(),
    comm: str.optional(),
    pid: z.number().int().optional(),
    ppid: z.number().int().optional(),
    uid: z.number().int().optional(),
    user: str.optional(),
    cwd: str.optional(),
    tty: str.optional(),
    ancestors: z.array(obj({ pid: z.number().int(), exe: str, comm: str.optional() })).optional(),
    inUpperLayer: z.boolean().optional(),
    exeDeleted: z.boolean().optional(),
    stdioSocket: z.boolean().optional(),
  }),
  obj({
    kind: z.literal('file_change'),
    ts,
    path: str,
    op: z.enum(['create', 'modify', 'delete', 'chmod']).default('modify'),
    mode: z.number().int().optional(),
    previousMode: z.number().int().optional(),
    linkTarget: str.optional(),
    nlink: z.number().int().optional(),
    pathPrefix: str.optional(),
    discovered: z.boolean().optional(),
    process: processSummary.optional(),
  }),
  obj({
    kind: z.literal('net_socket'),
    ts,
    protocol: z.enum(['tcp', 'tcp6', 'udp', 'udp6']),
    direction: z.enum(['listen', 'connect']),
    local: str,
    remote: str.optional(),
    state: str.optional(),
    process: processSummary.optional(),
  }),
  obj({
    kind: z.literal('resource_sample'),
    ts,
    scope: z.enum(['container', 'host']).default('container'),
    cpuCores: z.number().optional(),
    cpuPercent: z.number().optional(),
    memoryBytes: z.number().optional(),
    memoryLimitBytes: z.number().optional(),
    memoryPercent: z.number().optional(),
    pids: z.number().optional(),
  }),
  obj({
    kind: z.literal('container'),
    ts,
    action: z.enum(['create', 'start', 'restart', 'pause', 'unpause', 'die', 'stop', 'destroy', 'rename', 'update']).default('start'),
    discovered: z.boolean().optional(),
  }),
  obj({
    kind: z.literal('docker_action'),
    ts,
    scope: z.enum(['container', 'image']).default('container'),
    action: str,
    execId: str.optional(),
    command: str.optional(),
    image: str.optional(),
    signal: str.optional(),
  }),
]);

const expectation = z.union([
  str.describe('A rule id.'),
  obj({
    rule: str,
    severity: z.enum(['info', 'low', 'medium', 'high', 'critical']).optional(),
    profile: str.optional(),
    decidedBy: str.optional(),
    allowHint: str.optional(),
    subject: str.optional(),
    mitre: str.optional(),
    messageIncludes: str.optional(),
  }),
]);

const caseSchema = obj({
  name: str.min(1),
  container: containerSchema.optional().describe('Overrides of the file-level container.'),
  noContainer: z.boolean().optional().describe('The event comes from a host process (no container).'),
  previousImageId: str.optional().describe("The image this host ran before under the container's tag (image.digest_changed)."),
  event: eventSchema,
  expect: z
    .array(expectation)
    .describe(
      'Exactly the findings expected, in any order; [] = nothing at all, detections included. A case that expects findings but no detection finding ignores detection findings.',
    ),
  profile: z.union([str, z.null()]).optional().describe('The profile expected to apply; null = none.'),
});

export const ruleTestsSchema = obj({
  apiVersion: z.literal(RULES_API_VERSION),
  kind: z.literal('RuleTests'),
  name: str.min(1),
  description: str.optional(),
  rules: z.array(str.min(1)).optional().describe('Rule files or folders, relative to this file. Default: the rules/ folder shipped with runwatch.'),
  container: containerSchema.optional(),
  cases: z.array(caseSchema).min(1),
});

export type RuleTestsDoc = z.output<typeof ruleTestsSchema>;
type CaseDoc = z.output<typeof caseSchema>;
type Expectation = z.output<typeof expectation>;

export interface RuleCaseResult {
  file: string;
  line: number;
  suite: string;
  name: string;
  passed: boolean;
  /** What went wrong, one line each. */
  problems: string[];
  findings: Finding[];
}

export interface RuleTestRunOptions extends CompileOptions {
  /** Rules used when a file names none. */
  defaultRules: readonly string[];
  /** Rules that replace whatever the files name (runwatch rules test --rules). */
  overrideRules?: readonly string[];
}

export const DEFAULT_EVENT_TS = Date.parse('2025-06-01T00:00:00Z');
const DEFAULT_ID = 'c0ffee'.padEnd(64, '0');

function buildContainer(a: z.output<typeof containerSchema> | undefined, b: z.output<typeof containerSchema> | undefined): ContainerInfo {
  const c = { ...a, ...b };
  const info: ContainerInfo = {
    id: c.id ?? DEFAULT_ID,
    name: c.name ?? 'test',
    image: c.image ?? 'docker.io/library/test:1',
    imageId: c.imageId ?? `sha256:${'a'.repeat(64)}`,
    imageRepoDigests: c.imageRepoDigests ?? [],
    created: '2025-06-01T00:00:00Z',
    running: true,
    pid: 4242,
    user: c.user ?? '',
    privileged: c.privileged ?? false,
    capAdd: c.capAdd ?? [],
    capDrop: [],
    hostNamespaces: { pid: false, net: false, ipc: false, uts: false, userns: false, ...a?.hostNamespaces, ...b?.hostNamespaces },
    networkMode: c.networkMode ?? 'none',
    mounts: (c.mounts ?? []).map((m) => ({ type: m.type, source: m.source, destination: m.destination, readOnly: m.readOnly })),
    readOnlyRootfs: c.readOnlyRootfs ?? false,
    envNames: c.envNames ?? [],
    memoryLimit: 0,
    cpuLimit: 0,
  };
  if (c.imageDigest) info.imageDigest = c.imageDigest;
  if (c.imageCreated) info.imageCreated = c.imageCreated;
  if (c.imageUser !== undefined) info.imageUser = c.imageUser;
  if (c.labels) info.labels = c.labels;
  return info;
}

export function buildEvent(e: CaseDoc['event'], info: ContainerInfo | undefined): RunwatchEvent {
  const t = e.ts === undefined ? DEFAULT_EVENT_TS : typeof e.ts === 'number' ? e.ts : Date.parse(e.ts);
  const containerId = info?.id;
  switch (e.kind) {
    case 'process_exec': {
      const args = e.args ?? [e.argv0 ?? e.exe];
      return { ...e, ts: t, containerId, pid: e.pid ?? 100, ppid: e.ppid ?? 1, args, uid: e.uid ?? 0, ancestors: e.ancestors ?? [], resolved: true };
    }
    case 'file_change':
    case 'net_socket':
      return { ...e, ts: t, containerId: containerId ?? '' } as RunwatchEvent;
    case 'resource_sample':
    case 'docker_action':
      return { ...e, ts: t, containerId };
    case 'container':
      return { ...e, ts: t, containerId: containerId ?? DEFAULT_ID, ...(info && { info }) };
  }
}

function checkExpectations(expected: readonly Expectation[], all: readonly Finding[], isDetection: (rule: string) => boolean): string[] {
  const problems: string[] = [];
  // Allowlist cases that expect some finding need not list the baseline's; an allowed case must see none.
  const wantsDetections = expected.length === 0 || expected.some((e) => isDetection(typeof e === 'string' ? e : e.rule));
  const left = wantsDetections ? [...all] : all.filter((f) => !isDetection(f.rule));
  for (const exp of expected) {
    const want = typeof exp === 'string' ? { rule: exp } : exp;
    const i = left.findIndex((f) => f.rule === want.rule);
    if (i < 0) {
      problems.push(`expected ${want.rule}, not produced`);
      continue;
    }
    const f = left.splice(i, 1)[0];
    for (const key of ['severity', 'profile', 'decidedBy', 'allowHint', 'subject', 'mitre'] as const) {
      const w = (want as Record<string, unknown>)[key];
      if (w !== undefined && f[key] !== w) problems.push(`${want.rule}: ${key} is ${JSON.stringify(f[key])}, expected ${JSON.stringify(w)}`);
    }
    const inc = (want as { messageIncludes?: string }).messageIncludes;
    if (inc !== undefined && !f.message.includes(inc))
      problems.push(`${want.rule}: message ${JSON.stringify(f.message)} does not include ${JSON.stringify(inc)}`);
  }
  for (const f of left) problems.push(`unexpected ${f.rule} (${f.severity}): ${f.message}`);
  return problems;
}

/** Parses one cases file; problems are located RunwatchErrors (code RW_RULE_TEST). */
export function loadRuleTests(file: string): { doc: RuleTestsDoc; src: SourcedDocument } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RunwatchErrors([
      new RunwatchError('RW_RULE_READ', `cannot read test file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { file }, { cause: err }),
    ]);
  }
  const parsed = parseYamlDocuments(text, file, 'RW_RULE_YAML');
  if (parsed.errors.length) throw new RunwatchErrors(parsed.errors);
  if (parsed.docs.length !== 1)
    throw new RunwatchErrors([new RunwatchError('RW_RULE_TEST', 'a cases file holds exactly one YAML document', { file, line: parsed.docs[1]?.line ?? 1 })]);
  const src = parsed.docs[0];
  const r = ruleTestsSchema.safeParse(src.doc.toJS());
  if (!r.success) throw new RunwatchErrors(zodIssuesToErrors(src, r.error.issues, 'RW_RULE_TEST', 'RW_RULE_UNKNOWN_KEY'));
  return { doc: r.data, src };
}

/** Cases files behind `paths` (files as named, folders' *.cases.yaml). */
export function listRuleTestFiles(paths: readonly string[]): { files: string[]; errors: RunwatchError[] } {
  return listFiles(paths, (name) => !name.startsWith('.') && RULE_TEST_SUFFIXES.some((s) => name.endsWith(s)));
}

/**
 * Runs every case of one file against its rules with the pure decide(). Load problems of the file or
 * of its rules are thrown as RunwatchErrors.
 */
export function runRuleTestFile(file: string, opts: RuleTestRunOptions, cache = new Map<string, Ruleset>()): RuleCaseResult[] {
  const { doc, src } = loadRuleTests(file);
  const rulePaths = opts.overrideRules ?? (doc.rules ? doc.rules.map((r) => path.resolve(path.dirname(file), r)) : opts.defaultRules);
  const key = JSON.stringify(rulePaths);
  let ruleset = cache.get(key);
  if (!ruleset) {
    ruleset = loadRuleset(rulePaths, opts);
    cache.set(key, ruleset);
  }
  return doc.cases.map((c, i) => {
    const info = c.noContainer ? undefined : buildContainer(doc.container, c.container);
    const ev = buildEvent(c.event, info);
    const previousImage = c.previousImageId ? { imageId: c.previousImageId, since: '2025-01-01T00:00:00.000Z' } : undefined;
    const findings = decide(ruleset, ev, { container: info, previousImage });
    const problems = checkExpectations(c.expect, findings, (rule) => ruleset.detections.has(rule));
    if (c.profile !== undefined) {
      const got = info ? (ruleset.profileFor(info)?.profile.name ?? null) : null;
      if (got !== c.profile) problems.push(`profile is ${JSON.stringify(got)}, expected ${JSON.stringify(c.profile)}`);
    }
    return { file, line: locate(src, ['cases', i]).line, suite: doc.name, name: c.name, passed: problems.length === 0, problems, findings };
  });
}

/** JSON Schema of a cases file, for editors. */
export function ruleTestsJsonSchema(): Record<string, unknown> {
  return { ...z.toJSONSchema(ruleTestsSchema, { io: 'input' }), title: 'runwatch rule test cases (*.cases.yaml)' };
}
