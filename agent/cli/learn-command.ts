import { existsSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { defaultConfig, loadConfigFile, type Config } from '../config/load.js';
import { DEFAULT_GENERALISE_RULE, muteLearnedActivity, ProfileLearner, type GeneraliseRule, type Observations } from '../engine/learner.js';
import {
  coverageOf,
  duration,
  formatAdded,
  readMergeTarget,
  renderMerged,
  renderProfile,
  type LearnCoverage,
  type MergeTarget,
  type RenderedProfile,
} from '../engine/learner-render.js';
import { formatShadowReport, loadShadowRules, ShadowEvaluator, type ShadowReport, type ShadowRules } from '../engine/learner-shadow.js';
import { globProblem } from '../engine/path-matcher.js';
import { errorMessage, RunwatchErrors } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { Agent } from '../main.js';
import { JsonlSink } from '../sinks/jsonl/jsonl-sink.js';
import type { Sink } from '../sinks/sink.js';

export const LEARN_HELP = `Usage: runwatch learn --image GLOB [--for DURATION] [--out FILE] [--merge EXISTING] [--name NAME] [--config FILE]
       runwatch learn --shadow CANDIDATE [--for DURATION] [--config FILE]

Learning: runs the agent as "run" does (config, sensors, rules, outputs) and watches the containers
of images matching GLOB, those running and those started while it runs. When the time is up (or on
Ctrl-C / SIGTERM) it writes an ImageProfile of what they did: executables (busybox-style binaries as
{ exe, names }), paths written (5 or more names in one directory 2 or more levels deep become
"dir/**"), listening ports and outbound destinations, sorted, each with its count, under a comment
saying how much was observed and when the profile stopped growing. Allowlist findings for the learned
images are muted meanwhile; image policy, posture and resource findings still go to the outputs.

Shadow: runs the agent with the active rules as usual and also judges the containers a CANDIDATE
profile applies to by that candidate, without alerting; at the end it reports per rule and subject
what the candidate would have flagged, so it can be promoted with confidence.

Options:
  -i, --image GLOB       image glob, as in a profile's images: (repeatable)
      --for DURATION     how long to watch: 90s, 30m, 2h, 1h30m (default: until Ctrl-C / SIGTERM)
  -o, --out FILE         write the profile here (default: stdout); with --merge, the merged file
      --merge EXISTING   add what is not yet allowed to the profile in this rule file and print the
                         diff; without --out nothing is written (a dry run)
      --name NAME        profile name (default: from the image; with --merge, which profile of the file)
      --shadow CANDIDATE a rule file with candidate profile(s) to evaluate beside the active rules
  -c, --config FILE      YAML config (see config.example.yaml)
  -h, --help             this help

stdout carries the profile, the diff or the shadow report; records the config sends to stdout go to
stderr while learning.

Exit status: 0 done (shadow: the candidate would have raised no alert), 1 failure (shadow: it would
have), 2 usage, config or rule errors.`;

/** Where learning (or shadow evaluation) ends. */
export interface SessionOptions {
  config: Config;
  log: Logger;
  /** The session ends when this aborts. */
  signal: AbortSignal;
  extraSinks?: Sink[];
  /** Called once the agent runs. */
  onStarted?: (agent: Agent) => void;
}

export interface LearnSessionOptions extends SessionOptions {
  images: readonly string[];
  name: string;
  merge?: MergeTarget;
  rule?: GeneraliseRule;
  /** Called once the agent runs, with the learner (tests wait on what it observed). */
  onLearner?: (learner: ProfileLearner) => void;
}

export interface LearnResult extends RenderedProfile {
  observations: Observations;
  coverage: LearnCoverage;
  /** Allowlist findings muted for learned containers. */
  muted: number;
}

/** Runs the agent with a ProfileLearner on the pipeline until `signal` aborts, then renders (or merges) the profile. */
export async function learnSession(opts: LearnSessionOptions): Promise<LearnResult> {
  const learner = new ProfileLearner({ images: opts.images });
  const rule = opts.rule ?? DEFAULT_GENERALISE_RULE;
  const agent = new Agent({
    config: opts.config,
    log: opts.log,
    extraSinks: opts.extraSinks,
    onEvent: (ev, container) => learner.observe(ev, container),
    wrapDecider: (d) => muteLearnedActivity(d, learner),
  });
  opts.onLearner?.(learner);
  const progress = () => {
    const o = learner.observed;
    opts.log.info('learning', {
      containers: o.containers.size,
      events: o.events,
      entries: o.processes.size + o.writes.size + o.listen.size + o.connect.size,
      lastNewSecondsAgo: o.lastNewAt === undefined ? null : Math.round((Date.now() - o.lastNewAt) / 1000),
    });
  };
  const sensorsOff = await runUntil(agent, opts, progress);
  const coverage = coverageOf(learner.observed, { endedAt: Date.now(), sensorsOff, rule });
  const rendered = opts.merge
    ? renderMerged(opts.merge, { images: opts.images, lists: learner.lists(rule, opts.merge.allows), coverage })
    : renderProfile({ name: opts.name, images: opts.images, lists: learner.lists(rule), coverage });
  return { ...rendered, observations: learner.observed, coverage, muted: learner.muted };
}

/** Runs the agent with a ShadowEvaluator on the pipeline until `signal` aborts; the active rules alert as usual. */
export async function shadowSession(opts: SessionOptions & { rules: ShadowRules }): Promise<ShadowReport> {
  const shadow = new ShadowEvaluator(opts.rules);
  const agent = new Agent({ config: opts.config, log: opts.log, extraSinks: opts.extraSinks, onEvent: (ev, container) => shadow.observe(ev, container) });
  await runUntil(agent, opts, () => opts.log.info('shadow', { alerts: shadow.report().alerts }));
  return shadow.report();
}

const SENSORS_LEARNED_FROM = ['process', 'file', 'network'];

/** Starts the agent, waits for the signal, stops it (draining the queue); returns the sensors that were not running. */
async function runUntil(agent: Agent, opts: SessionOptions, progress: () => void): Promise<string[]> {
  try {
    await agent.start();
  } catch (err) {
    await agent.stop();
    throw err;
  }
  const running = Object.keys(agent.health().sensors as Record<string, unknown>);
  const off = SENSORS_LEARNED_FROM.filter((s) => !running.includes(s));
  for (const s of off) opts.log.warn('sensor not running; what it sees cannot be learned or evaluated', { sensor: s });
  opts.onStarted?.(agent);
  const timer = setInterval(progress, 60_000);
  timer.unref();
  try {
    if (!opts.signal.aborted) await new Promise<void>((resolve) => opts.signal.addEventListener('abort', () => resolve(), { once: true }));
  } finally {
    clearInterval(timer);
    await agent.stop();
  }
  return off;
}

/** "90s", "30m", "2h", "1h30m", "500ms", or a plain number of seconds; undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let total = 0;
  let rest = text;
  const part = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)/;
  while (rest) {
    const m = part.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * units[m[2]];
    rest = rest.slice(m[0].length);
  }
  return text ? total : undefined;
}

/** A profile name from an image glob: the repository's last component ("acme/web:*" → "web"). */
export function profileNameFor(image: string): string {
  const last = image.split('/').pop() ?? '';
  const name = last
    .replace(/[:@].*$/, '')
    .replace(/[^A-Za-z0-9._-]/g, '')
    .replace(/^[^A-Za-z0-9]+/, '');
  return name || 'learned';
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export async function learnCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      image: { type: 'string', short: 'i', multiple: true },
      for: { type: 'string' },
      out: { type: 'string', short: 'o' },
      merge: { type: 'string' },
      name: { type: 'string' },
      shadow: { type: 'string' },
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(LEARN_HELP + '\n');
    return 0;
  }
  const images = values.image ?? [];
  const problem = usageProblem(values, images);
  if (problem) {
    process.stderr.write(`runwatch learn: ${problem}\n\n${LEARN_HELP}\n`);
    return 2;
  }
  const durationMs = values.for === undefined ? undefined : parseDuration(values.for)!;
  let config: Config;
  let merge: MergeTarget | undefined;
  let shadowRules: ShadowRules | undefined;
  try {
    config = values.config ? loadConfigFile(values.config) : defaultConfig();
    if (values.merge) merge = readMergeTarget(path.resolve(values.merge), { name: values.name, images });
    if (values.shadow)
      shadowRules = loadShadowRules(path.resolve(values.shadow), config.rules.paths, {
        defaults: { cpuHighPercent: config.metrics.cpuHighPercent, memoryHighPercent: config.metrics.memoryHighPercent },
      });
  } catch (err) {
    const lines = err instanceof RunwatchErrors ? err.errors.map((e) => e.format()) : [errorMessage(err)];
    for (const l of lines) process.stderr.write(`runwatch learn: ${l}\n`);
    return 2;
  }
  process.env.APPLICATION_INSIGHTS_NO_STATSBEAT ??= '1';
  const log = createLogger({ level: config.log.level });
  const { config: sessionConfig, sinks } = recordsOffStdout(config, log);
  const controller = new AbortController();
  const end = (why: string) => {
    if (controller.signal.aborted) return;
    log.info('learning ends', { reason: why });
    controller.abort();
  };
  const onSignal = (signal: NodeJS.Signals) => end(signal);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let timer: NodeJS.Timeout | undefined;
  // The time is counted from when the agent watches, not from when it began starting.
  const onStarted = () => {
    if (durationMs !== undefined) timer = setTimeout(() => end('duration'), durationMs);
  };
  const session = { config: sessionConfig, log, signal: controller.signal, extraSinks: sinks, onStarted };
  try {
    if (shadowRules) {
      const report = await shadowSession({ ...session, rules: shadowRules });
      process.stdout.write(formatShadowReport(report, duration));
      return report.alerts ? 1 : 0;
    }
    const name = merge?.name ?? values.name ?? profileNameFor(images[0]);
    const result = await learnSession({ ...session, images, name, merge });
    if (merge) process.stdout.write(formatAdded(result, values.merge));
    let where = merge ? 'dry run, nothing written (use --out to write the merged file)' : `profile "${result.name}" written to stdout`;
    if (values.out) {
      try {
        writeAtomically(values.out, result.text);
        where = `wrote profile "${result.name}" to ${values.out}`;
      } catch (err) {
        // Hours of learning are not thrown away over a file that cannot be written.
        process.stdout.write(result.text);
        process.stderr.write(`runwatch learn: ${errorMessage(err)}; the profile went to stdout instead\n`);
        return 1;
      }
    } else if (!merge) process.stdout.write(result.text);
    const o = result.observations;
    const entries = result.added.filter((a) => a.list !== 'images').length;
    process.stderr.write(
      `runwatch learn: ${where}; ${o.containers.size} container(s), ${o.events} event(s), ${entries} entr${entries === 1 ? 'y' : 'ies'} added, ${result.muted} allowlist finding(s) muted\n`,
    );
    return 0;
  } catch (err) {
    process.stderr.write(`runwatch learn: ${errorMessage(err)}\n`);
    return 1;
  } finally {
    clearTimeout(timer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function usageProblem(v: { for?: string; out?: string; merge?: string; name?: string; shadow?: string }, images: string[]): string | undefined {
  if (v.shadow !== undefined) {
    if (images.length || v.merge !== undefined || v.name !== undefined || v.out !== undefined) return '--shadow takes no --image, --merge, --name or --out';
  } else if (images.length === 0) return '--image GLOB (or --shadow CANDIDATE) is required';
  for (const g of images) {
    const p = /\s/.test(g) ? 'holds white space' : globProblem(g, { absolute: false });
    if (p) return `--image ${JSON.stringify(g)}: ${p}`;
  }
  if (v.for !== undefined && !(parseDuration(v.for)! > 0)) return `--for ${JSON.stringify(v.for)}: give a duration such as 90s, 30m, 2h or 1h30m`;
  if (v.name !== undefined && !NAME_RE.test(v.name)) return `--name ${JSON.stringify(v.name)}: a profile name is letters, digits, ".", "_" and "-"`;
  if (v.out !== undefined) {
    const dir = path.dirname(path.resolve(v.out));
    if (!existsSync(dir) || !statSync(dir).isDirectory()) return `--out ${v.out}: folder ${dir} does not exist`;
  }
  return undefined;
}

/**
 * stdout carries the result, so records the config sends to stdout go to stderr for the session; every
 * other output (file, Azure Monitor, OTLP) is left as configured.
 */
function recordsOffStdout(config: Config, log: Logger): { config: Config; sinks: Sink[] } {
  const out = config.outputs;
  if (!out.stdout.enabled && out.jsonl.path !== '-') return { config, sinks: [] };
  const outputs = { ...out, stdout: { enabled: false }, jsonl: { ...out.jsonl, path: out.jsonl.path === '-' ? '' : out.jsonl.path } };
  return {
    config: { ...config, outputs },
    sinks: [new JsonlSink({ path: '-', fsyncIntervalMs: out.jsonl.fsyncIntervalMs, log, write: (t) => process.stderr.write(t) })],
  };
}

/** Write then rename, so the file (possibly the one merged into) is never left half written. */
function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.runwatch-${process.pid}.tmp`;
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, file);
  } catch (err) {
    throw new Error(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}
