import { defaultConfig, loadConfigFile, type Config } from '../config/load.js';
import { errorMessage, RunwatchErrors } from '../errors.js';
import { createLogger } from '../log.js';
import { Agent } from '../main.js';

export const RUN_HELP = `Usage: runwatch run [--config FILE]

Runs the agent: follows Docker and every container's activity, checks it against the rules
and writes records. Without --config, built-in defaults apply: the shipped rules/, records as
JSON lines to stdout and to /var/log/runwatch/records.jsonl.

Options:
  -c, --config FILE   YAML config (see config.example.yaml)
  -h, --help          this help

Signals: SIGTERM/SIGINT stop cleanly (drain, flush); SIGHUP reopens the records file.`;

export async function runCommand(opts: { config?: string }): Promise<number> {
  // A host security agent talks only to endpoints its operator configured: no statsbeat, no IMDS probe.
  process.env.APPLICATION_INSIGHTS_NO_STATSBEAT ??= '1';
  let config: Config;
  try {
    config = opts.config ? loadConfigFile(opts.config) : defaultConfig();
  } catch (err) {
    const lines = err instanceof RunwatchErrors ? err.errors.map((e) => e.format()) : [errorMessage(err)];
    for (const l of lines) process.stderr.write(`runwatch: ${l}\n`);
    return 2;
  }
  const log = createLogger({ level: config.log.level });
  const agent = new Agent({ config, log });
  let stopping: Promise<void> | undefined;
  const stop = (signal: string) => {
    if (stopping) return;
    log.info('stopping', { signal });
    stopping = agent.stop();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => agent.reopenOutputs());
  try {
    await agent.start();
  } catch (err) {
    process.stderr.write(`runwatch: ${errorMessage(err)}\n`);
    await agent.stop();
    return 1;
  }
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (stopping) {
        clearInterval(check);
        void stopping.then(resolve);
      }
    }, 50);
  });
  log.info('stopped');
  return 0;
}
