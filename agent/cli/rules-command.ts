import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BUILTIN_RULES_DIR, packageRoot } from '../config/load.js';
import { configSchema } from '../config/schema.js';
import { errorMessage, RunwatchError, RunwatchErrors } from '../errors.js';
import { explain, renderExplanation } from '../engine/explain.js';
import { NetSpecError } from '../engine/net-spec.js';
import { compileRuleset, loadRulesWithSources, type CompileOptions, type RuleSources } from '../engine/rule-compiler.js';
import { loadRuleDocuments } from '../engine/rule-loader.js';
import { rulesJsonSchema } from '../engine/rule-schema.js';
import { listRuleTestFiles, ruleTestsJsonSchema, runRuleTestFile } from '../engine/rule-tests.js';
import type { Ruleset } from '../engine/ruleset.js';

export const RULES_HELP = `Usage: runwatch rules <validate|test|explain|schema> [options]

  validate [PATHS]   check rule files; every error with file:line:column and field
  test [PATHS]       run rule test cases (*.cases.yaml)
  explain --image REF [--exe PATH [--args ARGS] [--parent NAME] | --write PATH | --listen SPEC | --connect SPEC] [--json]
                     which profile applies to an image, which detections are on, and what an activity would raise
  schema [--tests]   print the JSON Schema of rule documents (or of test cases files) for editors

Run "runwatch rules <subcommand> --help" for details.`;

const VALIDATE_HELP = `Usage: runwatch rules validate [PATHS...]

Checks rule files (YAML, one or more documents each, apiVersion: runwatch/v1) and prints every
problem as FILE:LINE:COLUMN: FIELD: MESSAGE [CODE]. PATHS are files or folders (their *.yaml and
*.yml, recursively; *.cases.yaml are skipped). Default: the rules/ folder shipped with runwatch.

Exit status: 0 valid, 1 errors found, 2 usage error.`;

const TEST_HELP = `Usage: runwatch rules test [PATHS...] [--rules PATH]... [--verbose]

Runs rule test cases: each *.cases.yaml names its rules (default: the shipped rules/), a container
and cases of one event each with the findings expected. PATHS are cases files or folders.
Default: the test/rules/ folder shipped with runwatch.

Options:
  --rules PATH   test against these rule files or folders instead of the ones each file names
  -v, --verbose  list every case, not only failures
  -h, --help     this help

Exit status: 0 all passed, 1 a case failed or a file did not load, 2 usage error.`;

const EXPLAIN_HELP = `Usage: runwatch rules explain --image REF [--exe PATH [process options]] [--write PATH [--chmod MODE | --link-to TARGET]]
                              [--listen SPEC] [--connect SPEC] [--rules PATH]... [--json]

Shows which profile applies to an image reference (after normalisation, e.g. nginx →
docker.io/library/nginx:latest), what the image policy says about it, which detections are off or
re-rated for it and why (file:line), and for each activity asked about: whether the allowlist allows
it (by which entry) or which finding it raises and the YAML line that would allow it, and which
detections would fire, with severity, MITRE technique and how to turn each off for this image.

Options:
  --image REF        image reference as a container would be started from (required)
  --exe PATH         an executable path inside the container
    --name NAME      the program name (argv[0]) it runs as, for busybox-style binaries (default: PATH's base name)
    --args ARGS      its arguments after argv[0], split like a shell does: --args "-c 'id; uname -a'"
    --parent NAME    its parent process, a name or executable path; repeat for the grandparent and up
    --uid N          the user id it runs as (default 0)
    --tty            it has a controlling terminal
    --stdio-socket   its stdin or stdout is a network socket
    --drift          its executable was written after the container started
  --write PATH       a path the container creates or changes
    --chmod MODE     the change is a chmod to octal MODE, e.g. 4755
    --link-to TARGET the change creates PATH as a symlink to TARGET
  --listen SPEC      a listening socket: tcp:8080 or tcp:127.0.0.1:8080
  --connect SPEC     an outbound connection: tcp:10.1.2.3:5432, udp:[fd00::1]:53
  --rules PATH       rule files or folders (repeatable; default: the shipped rules/)
  --json             print the explanation as JSON
  -h, --help         this help

Exit status: 0 no activity asked about would raise a finding (or none was asked), 1 some would (an
allowlist finding or a detection), 2 usage or rule errors.`;

const SCHEMA_HELP = `Usage: runwatch rules schema [--tests]

Prints the JSON Schema of a rule document (ImageProfile | ImagePolicy | Detection), or with --tests of a
*.cases.yaml file. The same schemas ship as schema/*.schema.json; point your editor's YAML
language server at them.`;

function out(text: string): void {
  process.stdout.write(text + '\n');
}

function err(text: string): void {
  process.stderr.write(text + '\n');
}

function compileOptions(): CompileOptions {
  const metrics = configSchema.parse({}).metrics;
  return { defaults: { cpuHighPercent: metrics.cpuHighPercent, memoryHighPercent: metrics.memoryHighPercent } };
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function rel(file: string | undefined): string | undefined {
  if (!file) return file;
  const r = path.relative(process.cwd(), file);
  return r.startsWith('..') ? file : r;
}

/** An error's "file:line:col: field: message [CODE]" with the file relative to the working folder. */
function formatError(e: RunwatchError): string {
  return new RunwatchError(e.code, e.message, { file: rel(e.file), line: e.line, column: e.column, field: e.field }).format();
}

function printErrors(error: unknown): void {
  if (error instanceof RunwatchErrors) for (const e of error.errors) err(formatError(e));
  else if (error instanceof RunwatchError) err(formatError(error));
  else err(`runwatch rules: ${errorMessage(error)}`);
}

export async function rulesCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      out(RULES_HELP);
      return sub === undefined ? 2 : 0;
    case 'validate':
      return validateCommand(rest);
    case 'test':
      return testCommand(rest);
    case 'explain':
      return explainCommand(rest);
    case 'schema':
      return schemaCommand(rest);
    default:
      err(`runwatch rules: unknown subcommand "${sub}"\n\n${RULES_HELP}`);
      return 2;
  }
}

function validateCommand(args: string[]): number {
  const { values, positionals } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  if (values.help) {
    out(VALIDATE_HELP);
    return 0;
  }
  const paths = positionals.length ? positionals : [BUILTIN_RULES_DIR()];
  const loaded = loadRuleDocuments(paths);
  const { ruleset, sources, errors } = compileRuleset(loaded.docs, compileOptions(), loaded.files, loaded.invalidProfiles);
  const all = [...loaded.errors, ...errors];
  for (const e of all) err(formatError(e));
  if (all.length || !ruleset || !sources) {
    err(`${all.length} error${all.length === 1 ? '' : 's'} in ${loaded.files.length} file${loaded.files.length === 1 ? '' : 's'}`);
    return 1;
  }
  const s = ruleset.summary();
  out(
    `ok: ${s.files} file${s.files === 1 ? '' : 's'}, ${s.profiles} profile${s.profiles === 1 ? '' : 's'}, ${s.entries} allow entries, ${plural(sources.detections.length, 'detection')}, policy: ${rel(ruleset.policy.file) ?? 'defaults'}`,
  );
  return 0;
}

function testCommand(args: string[]): number {
  const { values, positionals } = parseArgs({
    args,
    options: { help: { type: 'boolean', short: 'h' }, rules: { type: 'string', multiple: true }, verbose: { type: 'boolean', short: 'v' } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    out(TEST_HELP);
    return 0;
  }
  const defaultCases = path.join(packageRoot(), 'test', 'rules');
  if (!positionals.length && !existsSync(defaultCases)) {
    err(`runwatch rules test: no PATHS given and ${defaultCases} does not exist`);
    return 2;
  }
  const { files, errors } = listRuleTestFiles(positionals.length ? positionals : [defaultCases]);
  for (const e of errors) err(formatError(e));
  if (!files.length && !errors.length) {
    err('runwatch rules test: no *.cases.yaml files found');
    return 1;
  }
  const opts = { ...compileOptions(), defaultRules: [BUILTIN_RULES_DIR()], ...(values.rules && { overrideRules: values.rules.map((r) => path.resolve(r)) }) };
  const cache = new Map<string, Ruleset>();
  let passed = 0;
  let failed = 0;
  let broken = errors.length;
  for (const file of files) {
    let results;
    try {
      results = runRuleTestFile(file, opts, cache);
    } catch (e) {
      broken++;
      printErrors(e);
      continue;
    }
    for (const r of results) {
      if (r.passed) {
        passed++;
        if (values.verbose) out(`ok    ${rel(r.file)}:${r.line}  ${r.suite}: ${r.name}`);
        continue;
      }
      failed++;
      out(`FAIL  ${rel(r.file)}:${r.line}  ${r.suite}: ${r.name}`);
      for (const p of r.problems) out(`        ${p}`);
    }
  }
  out(
    `${passed} passed, ${failed} failed${broken ? `, ${broken} file${broken === 1 ? '' : 's'} did not load` : ''} (${files.length} file${files.length === 1 ? '' : 's'})`,
  );
  return failed || broken ? 1 : 0;
}

/** parseArgs refuses "--args -c…" as ambiguous; here a value that starts with "-" is still the option's value. */
function attachValues(args: string[], options: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) out.push(options.includes(args[i]) && i + 1 < args.length ? `${args[i]}=${args[++i]}` : args[i]);
  return out;
}

function explainCommand(argv: string[]): number {
  const { values } = parseArgs({
    args: attachValues(argv, ['--args', '--name']),
    options: {
      help: { type: 'boolean', short: 'h' },
      image: { type: 'string' },
      exe: { type: 'string' },
      name: { type: 'string' },
      write: { type: 'string' },
      listen: { type: 'string' },
      connect: { type: 'string' },
      rules: { type: 'string', multiple: true },
      args: { type: 'string' },
      parent: { type: 'string', multiple: true },
      uid: { type: 'string' },
      tty: { type: 'boolean' },
      'stdio-socket': { type: 'boolean' },
      drift: { type: 'boolean' },
      chmod: { type: 'string' },
      'link-to': { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    out(EXPLAIN_HELP);
    return 0;
  }
  const usage = (message: string) => {
    err(`runwatch rules explain: ${message}`);
    return 2;
  };
  if (!values.image) {
    err(`runwatch rules explain: --image is required\n\n${EXPLAIN_HELP}`);
    return 2;
  }
  for (const opt of ['name', 'args', 'parent', 'uid', 'tty', 'stdio-socket', 'drift'] as const)
    if (values[opt] !== undefined && values.exe === undefined) return usage(`--${opt} goes with --exe`);
  for (const opt of ['chmod', 'link-to'] as const) if (values[opt] !== undefined && values.write === undefined) return usage(`--${opt} goes with --write`);
  if (values.chmod !== undefined && values['link-to'] !== undefined) return usage('--chmod and --link-to describe different changes; pick one');
  if (values.chmod !== undefined && !/^[0-7]{3,4}$/.test(values.chmod))
    return usage(`--chmod takes an octal mode such as 4755, not ${JSON.stringify(values.chmod)}`);
  if (values.uid !== undefined && !/^\d+$/.test(values.uid)) return usage(`--uid takes a number, not ${JSON.stringify(values.uid)}`);
  const procArgs = values.args === undefined ? undefined : splitWords(values.args);
  if (procArgs === null) return usage('--args has an unclosed quote');
  let rules: { ruleset: Ruleset; sources: RuleSources };
  try {
    rules = loadRulesWithSources(values.rules ?? [BUILTIN_RULES_DIR()], compileOptions());
  } catch (e) {
    printErrors(e);
    return 2;
  }
  try {
    const result = explain(rules, {
      image: values.image,
      exe: values.exe,
      name: values.name,
      args: procArgs,
      parents: values.parent,
      uid: values.uid === undefined ? undefined : Number(values.uid),
      tty: values.tty,
      stdioSocket: values['stdio-socket'],
      drift: values.drift,
      write: values.write,
      chmod: values.chmod === undefined ? undefined : parseInt(values.chmod, 8),
      linkTo: values['link-to'],
      listen: values.listen,
      connect: values.connect,
    });
    if (values.json) out(JSON.stringify(result, null, 2));
    else for (const l of renderExplanation(result)) out(l);
    return result.wouldAlert ? 1 : 0;
  } catch (e) {
    if (e instanceof NetSpecError) {
      err(`runwatch rules explain: ${e.message}`);
      return 2;
    }
    throw e;
  }
}

/**
 * Words of a command line as a POSIX shell splits them: blanks separate, '…' keeps everything, "…"
 * and a backslash escape; null for an unclosed quote. No expansions (a rule sees what execve got).
 */
export function splitWords(text: string): string[] | null {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "'" || ch === '"') {
      const end = ch === "'" ? text.indexOf("'", i + 1) : closingDoubleQuote(text, i + 1);
      if (end < 0) return null;
      const body = text.slice(i + 1, end);
      word += ch === "'" ? body : body.replace(/\\([\\"$`])/g, '$1');
      inWord = true;
      i = end;
    } else if (ch === '\\' && i + 1 < text.length) {
      word += text[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

function closingDoubleQuote(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i;
  }
  return -1;
}

function schemaCommand(args: string[]): number {
  const { values } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' }, tests: { type: 'boolean' } }, strict: true });
  if (values.help) {
    out(SCHEMA_HELP);
    return 0;
  }
  out(JSON.stringify(values.tests ? ruleTestsJsonSchema() : rulesJsonSchema(), null, 2));
  return 0;
}
