import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { createLogger } from '../../agent/log.js';
import { BUSYBOX_IMAGE, runContainer } from '../helpers/docker.js';
import { startTestAgent, waitFor } from '../helpers/test-agent.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/rules/integration');

const BUSYBOX_PROFILE = `apiVersion: runwatch/v1
kind: ImageProfile
name: busybox
images: [runwatch-test/busybox]
process:
  allow:
    - exe: /bin/busybox
      names: [sh, sleep]
`;

const BAD_CIDR = `apiVersion: runwatch/v1
kind: ImageProfile
name: broken
images: [acme/x]
network:
  connect:
    - tcp:10.0.0.0/33:5432
`;

describe('rules hot reload (real files, real agent)', () => {
  it('swaps in good rules, keeps the last good ones on a bad file and says so in an audit record', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-reload-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    for (const f of ['policy.yaml', 'tools.yaml']) copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
    const logs: Record<string, unknown>[] = [];
    const log = createLogger({ level: 'debug', write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) });
    const t = await startTestAgent({ rules: { paths: [dir], watch: true, reloadDebounceMs: 100 } }, { log });
    const logged = (msg: string) => logs.filter((l) => l.msg === msg);

    const before = await runContainer({ image: BUSYBOX_IMAGE });
    await t.waitForRecord((r) => r.rule === 'image.unprofiled' && r.container?.id === before);

    // Good change: a profile for the busybox image.
    writeFileSync(path.join(dir, 'busybox.yaml'), BUSYBOX_PROFILE);
    await waitFor(
      () => logged('rules reloaded').length === 1,
      15_000,
      () => `a "rules reloaded" log; got ${JSON.stringify(logs.map((l) => l.msg))}`,
    );
    const after = await runContainer({ image: BUSYBOX_IMAGE });
    const root = await t.waitForRecord((r) => r.rule === 'posture.root_user' && r.container?.id === after);
    expect(root.profile).toBe('busybox');
    expect(t.records.filter((r) => r.rule === 'image.unprofiled' && r.container?.id === after)).toEqual([]);

    // Bad change: a file that does not validate. The last good rules stay.
    const bad = path.join(dir, 'broken.yaml');
    writeFileSync(bad, BAD_CIDR);
    const audit = await t.waitForRecord((r) => r.rule === 'rules.reload_failed');
    expect(audit).toMatchObject({
      kind: 'audit',
      severity: 'high',
      details: { file: bad, line: 7, field: 'network.connect[0]', code: 'RW_RULE_BAD_CIDR', errors: 1 },
    });
    expect(audit.message).toContain(`${bad}:7:7: network.connect[0]: bad connect entry "tcp:10.0.0.0/33:5432"`);
    expect(logged('rules reload failed, keeping the last good rules')).toEqual([
      expect.objectContaining({ level: 'error', file: bad, line: 7, field: 'network.connect[0]' }),
    ]);
    const kept = await runContainer({ image: BUSYBOX_IMAGE });
    const keptRoot = await t.waitForRecord((r) => r.rule === 'posture.root_user' && r.container?.id === kept);
    expect(keptRoot.profile).toBe('busybox');

    // Fixing it reloads again.
    rmSync(bad);
    await waitFor(
      () => logged('rules reloaded').length === 2,
      15_000,
      () => 'the second "rules reloaded" log',
    );
    expect(logged('rules reloaded')[1]).toMatchObject({ profiles: 2, policy: `${path.join(dir, 'policy.yaml')}:2` });
  });

  it('a ruleset that does not load stops the agent at start with every located error', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-reload-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(path.join(dir, 'broken.yaml'), BAD_CIDR);
    await expect(startTestAgent({ rules: { paths: [dir] } }, { autoStop: false })).rejects.toThrow(
      /broken\.yaml:7:7: network\.connect\[0\]: bad connect entry .* \[RW_RULE_BAD_CIDR\]/,
    );
  });
});
