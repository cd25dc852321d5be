#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../config/load.js';
import { RUN_HELP, runCommand } from './run-command.js';

const HELP = `runwatch — runtime behaviour monitor for Docker hosts

Usage: runwatch <command> [options]

Commands:
  run [--config FILE]      run the agent
  rules validate [PATHS]   check rule files (file:line:column and field for each error)
  rules test [PATHS]       run rule test cases
  rules explain --image REF [--exe PATH | --write PATH | --listen SPEC | --connect SPEC] [--json]
  rules schema             print the JSON Schema of rule files
  learn --image GLOB       write an allowlist profile from observed behaviour
  learn --shadow FILE      report what a candidate profile would have flagged, without alerting
  version                  print the version

Run "runwatch <command> --help" for a command's options.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(HELP + '\n');
      return cmd === undefined ? 2 : 0;
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`runwatch ${version()}\n`);
      return 0;
    case 'run': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } }, strict: true });
      if (values.help) {
        process.stdout.write(RUN_HELP + '\n');
        return 0;
      }
      return runCommand({ config: values.config });
    }
    case 'rules': {
      const { rulesCommand } = await import('./rules-command.js');
      return rulesCommand(rest);
    }
    case 'learn': {
      const { learnCommand } = await import('./learn-command.js');
      return learnCommand(rest);
    }
    default:
      process.stderr.write(`runwatch: unknown command "${cmd}"\n\n${HELP}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`runwatch: ${err instanceof Error ? err.message : String(err)}\n`);
    // Usage errors (unknown option, missing or ambiguous value) exit 2 like every other usage error.
    process.exitCode = String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS_') ? 2 : 1;
  },
);
