import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RunwatchError, RunwatchErrors } from '../errors.js';
import { configSchema, type RunwatchConfig } from './schema.js';
import { parseYamlDocuments, zodIssuesToErrors, locate, formatPath, type SourcedDocument } from './yaml-source.js';
import { registerSecret } from './redact.js';

/** The package root (holds rules/ and package.json), from either agent/ or dist/agent/. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      readFileSync(path.join(dir, 'package.json'));
      return dir;
    } catch {
      dir = path.dirname(dir);
    }
  }
  throw new Error('runwatch package root not found');
}

export const BUILTIN_RULES_DIR = () => path.join(packageRoot(), 'rules');

/** Deep-frozen config with derived values filled in. */
export type Config = Readonly<RunwatchConfig> & { readonly source: string };

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}/g;

/** Replaces ${VAR} and ${VAR:-default} in every string of the tree; an unset ${VAR} is an error. */
function substituteEnv(value: unknown, at: (string | number)[], env: NodeJS.ProcessEnv, missing: (field: (string | number)[], name: string) => void): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_m, name: string, hasDefault?: string, def?: string) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (hasDefault !== undefined) return def ?? '';
      missing(at, name);
      return '';
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, [...at, i], env, missing));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteEnv(v, [...at, k], env, missing)]));
  }
  return value;
}

export interface LoadConfigOptions {
  env?: NodeJS.ProcessEnv;
}

/** Parses and validates a config text; every problem is reported with file, line and field. */
export function parseConfig(text: string, file: string, opts: LoadConfigOptions = {}): Config {
  const env = opts.env ?? process.env;
  const { docs, errors } = parseYamlDocuments(text, file, 'RW_CONFIG_YAML');
  if (errors.length) throw new RunwatchErrors(errors);
  if (docs.length > 1) {
    throw new RunwatchErrors([new RunwatchError('RW_CONFIG_INVALID', 'a config file holds one YAML document', { file, line: docs[1].line })]);
  }
  const src: SourcedDocument | undefined = docs[0];
  const raw: unknown = src ? (src.doc.toJS() ?? {}) : {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new RunwatchErrors([new RunwatchError('RW_CONFIG_INVALID', 'the config must be a mapping of keys', { file, line: src?.line ?? 1 })]);
  }
  return validate(raw, src, file, env);
}

/** Built-in defaults, as `runwatch run` uses them without --config. */
export function defaultConfig(opts: LoadConfigOptions = {}): Config {
  return validate({}, undefined, '<defaults>', opts.env ?? process.env);
}

function validate(raw: unknown, src: SourcedDocument | undefined, file: string, env: NodeJS.ProcessEnv): Config {
  const envErrors: RunwatchError[] = [];
  const onMissing = (at: (string | number)[], name: string) => {
    const loc = src ? locate(src, at) : {};
    envErrors.push(
      new RunwatchError('RW_CONFIG_ENV', `environment variable ${name} is not set (use \${${name}:-default} for an optional one)`, {
        file,
        ...loc,
        field: formatPath(at),
      }),
    );
  };
  // Defaults may hold ${VAR:-} references too, so substitute after applying them.
  const first = configSchema.safeParse(raw);
  if (!first.success) {
    throw new RunwatchErrors(
      src
        ? zodIssuesToErrors(src, first.error.issues, 'RW_CONFIG_INVALID')
        : first.error.issues.map((i) => new RunwatchError('RW_CONFIG_INVALID', i.message, { file, field: formatPath(i.path as (string | number)[]) })),
    );
  }
  const substituted = substituteEnv(first.data, [], env, onMissing) as RunwatchConfig;
  if (envErrors.length) throw new RunwatchErrors(envErrors);
  const cfg: RunwatchConfig = {
    ...substituted,
    host: substituted.host || hostname(),
    rules: { ...substituted.rules, paths: substituted.rules.paths.filter((p) => p !== '').map((p) => (src ? path.resolve(path.dirname(file), p) : p)) },
  };
  if (cfg.rules.paths.length === 0) cfg.rules.paths = [BUILTIN_RULES_DIR()];
  const az = cfg.outputs.azureMonitor;
  if (az.connectionStringFile) {
    try {
      az.connectionString = readFileSync(path.resolve(path.dirname(file), az.connectionStringFile), 'utf8').trim();
    } catch (err) {
      throw new RunwatchErrors([
        new RunwatchError('RW_CONFIG_READ', `cannot read the connection string file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
          file,
          field: 'outputs.azureMonitor.connectionStringFile',
          ...(src ? locate(src, ['outputs', 'azureMonitor', 'connectionStringFile']) : {}),
        }),
      ]);
    }
  }
  registerSecret(az.connectionString);
  for (const v of Object.values(cfg.outputs.otlp.headers)) registerSecret(v);
  return deepFreeze({ ...cfg, source: file });
}

export function loadConfigFile(file: string, opts: LoadConfigOptions = {}): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RunwatchErrors([
      new RunwatchError('RW_CONFIG_READ', `cannot read config: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { file }, { cause: err }),
    ]);
  }
  return parseConfig(text, path.resolve(file), opts);
}

export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
