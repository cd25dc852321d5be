import type { ContainerInfo, RunwatchEvent } from '../events/types.js';
import { RunwatchError, RunwatchErrors } from '../errors.js';
import { decide } from './decide.js';
import { compare } from './learner.js';
import { compileRuleset, type CompileOptions } from './rule-compiler.js';
import { loadRuleDocuments, type LoadedRuleDoc } from './rule-loader.js';
import type { Ruleset } from './ruleset.js';

/** A candidate profile file compiled for shadow evaluation. */
export interface ShadowRules {
  file: string;
  ruleset: Ruleset;
  /** Names of the candidate's profiles; only containers they apply to are evaluated. */
  candidates: ReadonlySet<string>;
}

/**
 * Compiles the candidate file beside the active rules: the candidate's profiles replace active ones of the
 * same name; the other active profiles stay available to `extends` but apply to no image, so each container
 * a candidate profile matches is judged by that candidate profile. The candidate's ImagePolicy, if it has
 * one, replaces the active one (severities, rules turned off). Throws RunwatchErrors, located.
 */
export function loadShadowRules(candidateFile: string, activePaths: readonly string[], opts: CompileOptions): ShadowRules {
  const candidate = loadRuleDocuments([candidateFile]);
  if (candidate.errors.length) throw new RunwatchErrors(candidate.errors);
  const names = new Set(candidate.docs.flatMap((d) => (d.kind === 'ImageProfile' ? [d.doc.name] : [])));
  if (names.size === 0)
    throw new RunwatchErrors([new RunwatchError('RW_USAGE', 'the candidate file holds no ImageProfile to evaluate', { file: candidateFile })]);
  const active = loadRuleDocuments(activePaths);
  if (active.errors.length) throw new RunwatchErrors(active.errors);
  const hasPolicy = candidate.docs.some((d) => d.kind === 'ImagePolicy');
  const bases: LoadedRuleDoc[] = active.docs.flatMap((d): LoadedRuleDoc[] => {
    if (d.kind === 'ImagePolicy') return hasPolicy ? [] : [d];
    // Shadow mode asks what a candidate profile would allow; detections would only add noise to that.
    if (d.kind === 'Detection') return [];
    if (names.has(d.doc.name) || candidate.files.includes(d.src.file)) return [];
    return [{ ...d, doc: { ...d.doc, images: [] } }];
  });
  const { ruleset, errors } = compileRuleset(
    [...candidate.docs, ...bases],
    opts,
    [...candidate.files, ...active.files],
    new Set([...candidate.invalidProfiles, ...active.invalidProfiles]),
  );
  if (!ruleset) throw new RunwatchErrors(errors);
  return { file: candidateFile, ruleset, candidates: names };
}

interface Tally {
  rule: string;
  profile: string;
  subject: string;
  allowHint?: string;
  count: number;
  containers: Set<string>;
}

export interface ShadowReport {
  file: string;
  startedAt: number;
  endedAt: number;
  containers: number;
  events: number;
  alerts: number;
  /** Per rule and subject, most frequent first. */
  rows: { rule: string; profile: string; subject: string; allowHint?: string; count: number; containers: number }[];
}

/**
 * Decides every activity event of the containers a candidate profile applies to with the candidate rules
 * and counts what it would have flagged. It never produces records: the active rules alone alert.
 */
export class ShadowEvaluator {
  private readonly tallies = new Map<string, Tally>();
  private readonly containers = new Set<string>();
  private events = 0;
  private readonly startedAt: number;

  constructor(
    private readonly rules: ShadowRules,
    private readonly now: () => number = Date.now,
  ) {
    this.startedAt = now();
  }

  /** The pipeline tap (PipelineOptions.onEvent). */
  observe(ev: RunwatchEvent, container: ContainerInfo | undefined): void {
    if (!container || (ev.kind !== 'process_exec' && ev.kind !== 'file_change' && ev.kind !== 'net_socket' && ev.kind !== 'resource_sample')) return;
    const match = this.rules.ruleset.profileFor(container);
    if (!match || !this.rules.candidates.has(match.profile.name)) return;
    this.containers.add(container.id);
    this.events++;
    for (const f of decide(this.rules.ruleset, ev, { container })) {
      if (f.kind !== 'alert') continue;
      const subject = f.subject ?? '';
      const key = `${f.rule}\0${subject}`;
      let t = this.tallies.get(key);
      if (!t)
        this.tallies.set(
          key,
          (t = {
            rule: f.rule,
            profile: f.profile ?? match.profile.name,
            subject,
            ...(f.allowHint !== undefined && { allowHint: f.allowHint }),
            count: 0,
            containers: new Set(),
          }),
        );
      t.count++;
      t.containers.add(container.id);
    }
  }

  report(): ShadowReport {
    const rows = [...this.tallies.values()]
      .map((t) => ({
        rule: t.rule,
        profile: t.profile,
        subject: t.subject,
        ...(t.allowHint !== undefined && { allowHint: t.allowHint }),
        count: t.count,
        containers: t.containers.size,
      }))
      .sort((a, b) => b.count - a.count || compare(a.rule, b.rule) || compare(a.subject, b.subject));
    return {
      file: this.rules.file,
      startedAt: this.startedAt,
      endedAt: this.now(),
      containers: this.containers.size,
      events: this.events,
      alerts: rows.reduce((n, r) => n + r.count, 0),
      rows,
    };
  }
}

/** The report as text: a summary line, then a table of rule, subject, count and the entry that would allow it. */
export function formatShadowReport(r: ShadowReport, duration: (ms: number) => string): string {
  const head = `shadow run of ${r.file} for ${duration(r.endedAt - r.startedAt)}: ${r.containers} container${r.containers === 1 ? '' : 's'} matched, ${r.events} event${r.events === 1 ? '' : 's'} evaluated`;
  if (r.rows.length === 0) return `${head}; the candidate would have raised no alerts\n`;
  const table = [
    ['count', 'rule', 'profile', 'subject', 'containers', 'allow with'],
    ...r.rows.map((x) => [String(x.count), x.rule, x.profile, showSubject(x.subject), String(x.containers), x.allowHint ?? '']),
  ];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  const lines = table.map((row) =>
    row
      .map((cell, i) => (i === 0 || i === 4 ? cell.padStart(widths[i]) : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
  return `${head}; the candidate would have raised ${r.alerts} alert${r.alerts === 1 ? '' : 's'} (${r.rows.length} distinct):\n\n${lines.join('\n')}\n`;
}

/** Process subjects are "exe\0program name"; show the name only where it differs from the file's. */
function showSubject(subject: string): string {
  const [exe, name] = subject.split('\0');
  return name === undefined || exe.endsWith(`/${name}`) ? exe : `${exe} as ${name}`;
}
