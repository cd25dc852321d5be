import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BUILTIN_RULES_DIR, packageRoot } from '../config/load.js';
import { configSchema } from '../config/schema.js';
import { errorMessage, RunwatchError, RunwatchErrors } from '../errors.js';
import { explain } from '../engine/explain.js';
import { NetSpecError } from '../engine/net-spec.js';
import { compileRuleset, loadRuleset, type CompileOptions } from '../engine/rule-compiler.js';
import { loadRuleDocuments } from '../engine/rule-loader.js';
import { rulesJsonSchema } from '../engine/rule-schema.js';
import { listRuleTestFiles, ruleTestsJsonSchema, runRuleTestFile } from '../engine/rule-tests.js';
import type { Ruleset } from '../engine/ruleset.js';

export const RULES_HELP = `Usage: runwatch rules <validate|test|explain|schema> [options]

  validate [PATHS]   check rule files; every error with file:line:column and field
  test [PATHS]       run rule test cases (*.cases.yaml)
  explain --image REF [--exe PATH [--name NAME] | --write PATH | --listen SPEC | --connect SPEC]
                     which profile applies to an image and why an activity is allowed or not
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

const EXPLAIN_HELP = `Usage: runwatch rules explain --image REF [--exe PATH [--name NAME]] [--write PATH]
                              [--listen SPEC] [--connect SPEC] [--rules PATH]...

Shows which profile applies to an image reference (after normalisation, e.g. nginx →
docker.io/library/nginx:latest), what the image policy says about it, and for each activity asked
about whether it is allowed, by which entry (file:line), or which finding it raises and the YAML
line that would allow it.

Options:
  --image REF      image reference as a container would be started from (required)
  --exe PATH       an executable path inside the container
  --name NAME      the program name (argv[0]) it runs as, for busybox-style binaries (default: PATH's base name)
  --write PATH     a path the container writes
  --listen SPEC    a listening socket: tcp:8080 or tcp:127.0.0.1:8080
  --connect SPEC   an outbound connection: tcp:10.1.2.3:5432, udp:[fd00::1]:53
  --rules PATH     rule files or folders (repeatable; default: the shipped rules/)
  -h, --help       this help

Exit status: 0 allowed (or nothing asked), 1 some activity would alert, 2 usage or rule errors.`;

const SCHEMA_HELP = `Usage: runwatch rules schema [--tests]

Prints the JSON Schema of a rule document (ImageProfile | ImagePolicy), or with --tests of a
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
  const { ruleset, errors } = compileRuleset(loaded.docs, compileOptions(), loaded.files, loaded.invalidProfiles);
  const all = [...loaded.errors, ...errors];
  for (const e of all) err(formatError(e));
  if (all.length || !ruleset) {
    err(`${all.length} error${all.length === 1 ? '' : 's'} in ${loaded.files.length} file${loaded.files.length === 1 ? '' : 's'}`);
    return 1;
  }
  const s = ruleset.summary();
  out(
    `ok: ${s.files} file${s.files === 1 ? '' : 's'}, ${s.profiles} profile${s.profiles === 1 ? '' : 's'}, ${s.entries} allow entries, policy: ${rel(ruleset.policy.file) ?? 'defaults'}`,
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

function explainCommand(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h' },
      image: { type: 'string' },
      exe: { type: 'string' },
      name: { type: 'string' },
      write: { type: 'string' },
      listen: { type: 'string' },
      connect: { type: 'string' },
      rules: { type: 'string', multiple: true },
    },
    strict: true,
  });
  if (values.help) {
    out(EXPLAIN_HELP);
    return 0;
  }
  if (!values.image) {
    err(`runwatch rules explain: --image is required\n\n${EXPLAIN_HELP}`);
    return 2;
  }
  if (values.name !== undefined && values.exe === undefined) {
    err('runwatch rules explain: --name goes with --exe');
    return 2;
  }
  let ruleset: Ruleset;
  try {
    ruleset = loadRuleset(values.rules ?? [BUILTIN_RULES_DIR()], compileOptions());
  } catch (e) {
    printErrors(e);
    return 2;
  }
  try {
    const result = explain(ruleset, {
      image: values.image,
      exe: values.exe,
      name: values.name,
      write: values.write,
      listen: values.listen,
      connect: values.connect,
    });
    for (const l of result.lines) out(l);
    return result.wouldAlert ? 1 : 0;
  } catch (e) {
    if (e instanceof NetSpecError) {
      err(`runwatch rules explain: ${e.message}`);
      return 2;
    }
    throw e;
  }
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
