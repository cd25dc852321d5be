import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultConfig, loadConfigFile, parseConfig } from '../../../agent/config/load.js';
import { RunwatchErrors } from '../../../agent/errors.js';

function errorsOf(fn: () => unknown) {
  try {
    fn();
  } catch (err) {
    if (err instanceof RunwatchErrors) return err.errors;
    throw err;
  }
  throw new Error('expected errors');
}

describe('config loading', () => {
  it('applies every default without a file', () => {
    const cfg = defaultConfig({ env: {} });
    expect(cfg.docker.socket).toBe('/var/run/docker.sock');
    expect(cfg.outputs.jsonl.path).toBe('/var/log/runwatch/records.jsonl');
    expect(cfg.outputs.stdout.enabled).toBe(true);
    expect(cfg.rules.paths).toHaveLength(1);
    expect(cfg.rules.paths[0]).toMatch(/rules$/);
    expect(cfg.host).not.toBe('');
    expect(Object.isFrozen(cfg.outputs.jsonl)).toBe(true);
  });

  it('names file, line and key of an unknown key', () => {
    const [e] = errorsOf(() => parseConfig('docker:\n  socket: /x.sock\n  sockett: 1\n', '/etc/rw.yaml'));
    expect(e.code).toBe('RW_CONFIG_INVALID');
    expect(e.format()).toBe('/etc/rw.yaml:3:3: docker.sockett: unknown key "sockett" [RW_CONFIG_INVALID]');
  });

  it('names the line of a value of the wrong type', () => {
    const errs = errorsOf(() => parseConfig('pipeline:\n  queueCapacity: lots\n', 'c.yaml'));
    expect(errs[0].line).toBe(2);
    expect(errs[0].field).toBe('pipeline.queueCapacity');
  });

  it('reports YAML syntax errors with their position', () => {
    const [e] = errorsOf(() => parseConfig('docker:\n  socket: [unclosed\n', 'c.yaml'));
    expect(e.code).toBe('RW_CONFIG_YAML');
    expect(e.file).toBe('c.yaml');
    expect(e.line).toBeGreaterThanOrEqual(2);
  });

  it('substitutes ${VAR} and ${VAR:-default}, and reports an unset one with its key', () => {
    const cfg = parseConfig('host: ${RW_HOST}\nstateDir: ${RW_STATE:-/tmp/rw}\n', 'c.yaml', { env: { RW_HOST: 'h1' } });
    expect(cfg.host).toBe('h1');
    expect(cfg.stateDir).toBe('/tmp/rw');
    const [e] = errorsOf(() => parseConfig('host: x\nlog:\n  level: info\ndocker:\n  socket: ${NOPE_SOCKET}\n', 'c.yaml', { env: {} }));
    expect(e.code).toBe('RW_CONFIG_ENV');
    expect(e.line).toBe(5);
    expect(e.field).toBe('docker.socket');
  });

  it('turns the Azure output on from APPLICATIONINSIGHTS_CONNECTION_STRING alone', () => {
    const cs = 'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:1/';
    expect(defaultConfig({ env: { APPLICATIONINSIGHTS_CONNECTION_STRING: cs } }).outputs.azureMonitor.connectionString).toBe(cs);
    expect(defaultConfig({ env: {} }).outputs.azureMonitor.connectionString).toBe('');
  });

  it('reports a missing config file clearly', () => {
    const [e] = errorsOf(() => loadConfigFile('/nonexistent/runwatch.yaml'));
    expect(e.format()).toContain('/nonexistent/runwatch.yaml: cannot read config: ENOENT');
  });

  it('accepts config.example.yaml, which documents every key of the schema', () => {
    const file = path.resolve('config.example.yaml');
    const cfg = loadConfigFile(file, { env: {} });
    const text = readFileSync(file, 'utf8');
    const keys = (obj: object, prefix = ''): string[] =>
      Object.entries(obj).flatMap(([k, v]) =>
        v && typeof v === 'object' && !Array.isArray(v) && k !== 'headers' ? keys(v, `${prefix}${k}.`) : [`${prefix}${k}`],
      );
    const { source: _s, ...rest } = cfg;
    for (const key of keys(rest)) {
      const leaf = key.split('.').pop()!;
      expect(text, `config.example.yaml should document ${key}`).toMatch(new RegExp(`^\\s*#?\\s*${leaf}:`, 'm'));
    }
  });
});
