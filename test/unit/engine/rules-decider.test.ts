import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decide, programName } from '../../../agent/engine/decide.js';
import { ImageHistory } from '../../../agent/engine/image-history.js';
import { compileRuleset } from '../../../agent/engine/rule-compiler.js';
import { parseRuleText } from '../../../agent/engine/rule-loader.js';
import { newDecisionState, RulesDecider } from '../../../agent/engine/rules-decider.js';
import type { ContainerInfo, ContainerLifecycleEvent, RunwatchEvent } from '../../../agent/events/types.js';
import { silentLogger } from '../../../agent/log.js';

const RULES = `apiVersion: runwatch/v1
kind: ImagePolicy
registries: [docker.io]
---
apiVersion: runwatch/v1
kind: ImageProfile
name: app
images: [acme/app]
process:
  allow: [/usr/bin/app]
`;

function ruleset(text = RULES) {
  const { ruleset, errors } = compileRuleset(parseRuleText(text, '/rules/r.yaml').docs, { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } });
  if (!ruleset) throw new Error(errors.map((e) => e.format()).join('\n'));
  return ruleset;
}

function container(over: Partial<ContainerInfo> = {}): ContainerInfo {
  return {
    id: 'a'.repeat(64),
    name: 'app-1',
    image: 'acme/app:1',
    imageId: `sha256:${'1'.repeat(64)}`,
    imageRepoDigests: [],
    created: '2025-01-01T00:00:00Z',
    running: true,
    pid: 10,
    user: '',
    privileged: false,
    capAdd: [],
    capDrop: [],
    hostNamespaces: { pid: false, net: false, ipc: false, uts: false, userns: false },
    networkMode: 'none',
    mounts: [],
    readOnlyRootfs: true,
    envNames: [],
    memoryLimit: 0,
    cpuLimit: 0,
    ...over,
  };
}

const lifecycle = (action: ContainerLifecycleEvent['action'], info: ContainerInfo, ts = Date.parse('2025-06-01T00:00:00Z')): ContainerLifecycleEvent => ({
  kind: 'container',
  ts,
  action,
  containerId: info.id,
  info,
});
const rules = (findings: { rule: string }[]) => findings.map((f) => f.rule).sort();

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempFile(name: string): string {
  const d = mkdtempSync(path.join(tmpdir(), 'rw-decider-'));
  dirs.push(d);
  return path.join(d, name);
}

describe('RulesDecider: image and posture once per container', () => {
  it('assesses at create and not again at start or restart; again after destroy and a new create', () => {
    const d = new RulesDecider(ruleset());
    const c = container();
    expect(rules(d.decide(lifecycle('create', c), { container: c }))).toEqual(['posture.root_user']);
    expect(d.decide(lifecycle('start', c), { container: c })).toEqual([]);
    expect(d.decide(lifecycle('restart', c), { container: c })).toEqual([]);
    expect(d.decide(lifecycle('start', c), { container: c })).toEqual([]);
    d.decide({ kind: 'container', ts: 0, action: 'destroy', containerId: c.id }, {});
    expect(rules(d.decide(lifecycle('start', c), { container: c }))).toEqual(['posture.root_user']);
  });

  it('assesses at start when it never saw the create (agent started later)', () => {
    const d = new RulesDecider(ruleset());
    const c = container({ id: 'b'.repeat(64), capAdd: ['SYS_ADMIN'] });
    expect(rules(d.decide({ ...lifecycle('start', c), discovered: true }, { container: c }))).toEqual(['posture.added_capabilities', 'posture.root_user']);
  });

  it('keeps that memory across a rule reload', () => {
    const d = new RulesDecider(ruleset());
    const c = container();
    d.decide(lifecycle('create', c), { container: c });
    const reloaded = d.withRuleset(ruleset(RULES.replace('registries: [docker.io]', 'registries: [acr.acme.example]')));
    expect(reloaded.decide(lifecycle('start', c), { container: c })).toEqual([]);
    const other = container({ id: 'c'.repeat(64) });
    expect(rules(reloaded.decide(lifecycle('start', other), { container: other }))).toEqual(['image.registry_not_approved', 'posture.root_user']);
  });
});

describe('RulesDecider: image.digest_changed through the image history', () => {
  it('alerts once when a tag starts running another image, and remembers it across restarts', () => {
    const file = tempFile('image-history.json');
    const d1 = new RulesDecider(ruleset(), newDecisionState(new ImageHistory({ file, log: silentLogger })));
    const first = container({ user: '1000' });
    expect(d1.decide(lifecycle('start', first), { container: first })).toEqual([]);
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { version: number; tags: Record<string, { imageId: string }> };
    expect(saved.tags['docker.io/acme/app:1'].imageId).toBe(first.imageId);

    // The agent restarts: a new decider reads the same file.
    const d2 = new RulesDecider(ruleset(), newDecisionState(new ImageHistory({ file, log: silentLogger })));
    const same = container({ id: 'd'.repeat(64), user: '1000' });
    expect(d2.decide(lifecycle('start', same), { container: same })).toEqual([]);
    const changed = container({ id: 'e'.repeat(64), user: '1000', imageId: `sha256:${'2'.repeat(64)}`, imageDigest: `acme/app@sha256:${'3'.repeat(64)}` });
    const findings = d2.decide(lifecycle('start', changed), { container: changed });
    expect(findings).toEqual([
      expect.objectContaining({
        rule: 'image.digest_changed',
        severity: 'medium',
        profile: 'app',
        details: expect.objectContaining({ previousImageId: first.imageId, imageId: changed.imageId }),
      }),
    ]);
    expect(findings[0].message).toMatch(
      /^Tag docker\.io\/acme\/app:1 now runs image acme\/app@sha256:333333333333 in container app-1 \(acme\/app:1\); on this host it ran sha256:111111111111 since 2025-06-01T00:00:00\.000Z$/,
    );
    const again = container({ id: 'f'.repeat(64), user: '1000', imageId: changed.imageId });
    expect(d2.decide(lifecycle('start', again), { container: again })).toEqual([]);
  });

  it('does not track containers started by digest', () => {
    const history = new ImageHistory({ log: silentLogger });
    const d = new RulesDecider(ruleset(), newDecisionState(history));
    const c = container({ user: '1000', image: `acme/app@sha256:${'4'.repeat(64)}` });
    d.decide(lifecycle('start', c), { container: c });
    expect(history.size).toBe(0);
  });

  it('starts empty from a corrupt file and forgets the oldest tags past its limit', () => {
    const file = tempFile('h.json');
    writeFileSync(file, '{not json');
    const h = new ImageHistory({ file, log: silentLogger, maxTags: 2 });
    expect(h.size).toBe(0);
    h.record('a:1', 'sha256:1', undefined, 0);
    h.record('b:1', 'sha256:2', undefined, 0);
    h.record('c:1', 'sha256:3', undefined, 0);
    expect([h.get('a:1'), h.get('c:1')?.imageId]).toEqual([undefined, 'sha256:3']);
    expect(new ImageHistory({ file, log: silentLogger }).size).toBe(2);
  });

  it('counts a history it cannot write and keeps deciding', () => {
    const notADir = tempFile('plain-file');
    writeFileSync(notADir, '');
    const h = new ImageHistory({ file: path.join(notADir, 'h.json'), log: silentLogger });
    h.record('a:1', 'sha256:1', undefined, 0);
    expect(h.stats.writeErrors).toBe(1);
    expect(h.get('a:1')?.imageId).toBe('sha256:1');
  });
});

describe('decide', () => {
  const rs = ruleset();
  const c = container();
  const exec = (over: Partial<Extract<RunwatchEvent, { kind: 'process_exec' }>>): RunwatchEvent => ({
    kind: 'process_exec',
    ts: 0,
    containerId: c.id,
    pid: 2,
    ppid: 1,
    exe: '/usr/bin/x',
    args: [],
    uid: 0,
    ancestors: [],
    resolved: true,
    ...over,
  });

  it('gives host processes (no container) no allowlist decisions', () => {
    expect(decide(rs, exec({ exe: '/usr/bin/curl' }), {})).toEqual([]);
  });

  it('is deterministic and leaves the event alone', () => {
    const ev = exec({ exe: '/usr/bin/curl', args: ['curl'] });
    const before = JSON.stringify(ev);
    const a = decide(rs, ev, { container: c });
    expect(decide(rs, ev, { container: c })).toEqual(a);
    expect(JSON.stringify(ev)).toBe(before);
  });

  it('never throws on odd events', () => {
    const odd: RunwatchEvent[] = [
      exec({ exe: '', args: [] }),
      exec({ exe: '/', args: [''], argv0: '' }),
      { kind: 'net_socket', ts: 0, containerId: c.id, protocol: 'tcp', direction: 'listen', local: 'garbage' },
      { kind: 'net_socket', ts: 0, containerId: c.id, protocol: 'udp6', direction: 'connect', local: '[::]:1', remote: '[zz::1]:53' },
      { kind: 'net_socket', ts: 0, containerId: c.id, protocol: 'tcp', direction: 'connect', local: '0.0.0.0:1' },
      { kind: 'file_change', ts: 0, containerId: c.id, path: '', op: 'create' },
      { kind: 'resource_sample', ts: 0, containerId: c.id, scope: 'container', cpuPercent: Number.NaN, memoryPercent: Infinity },
      {
        kind: 'container',
        ts: Number.NaN,
        action: 'start',
        containerId: c.id,
        info: container({ image: '', imageCreated: 'not a date', mounts: [{ type: 'bind', source: '', destination: '', readOnly: false }] }),
      },
      { kind: 'container', ts: 0, action: 'create', containerId: c.id },
      { kind: 'process_exit', ts: 0, pid: 1 },
      { kind: 'docker_action', ts: 0, scope: 'image', action: 'pull', image: 'x' },
      { kind: 'agent_notice', ts: 0, rule: 'rules.reload_failed', severity: 'high', message: 'm' },
    ];
    for (const ev of odd) expect(() => decide(rs, ev, { container: c })).not.toThrow();
  });

  it('knows busybox applets from argv[0], and from the first argument when run as busybox', () => {
    expect(programName({ exe: '/bin/busybox', args: ['sleep', '1'], argv0: '/bin/sleep' })).toBe('sleep');
    expect(programName({ exe: '/bin/busybox', args: ['busybox', 'nc', '-l'] })).toBe('nc');
    expect(programName({ exe: '/bin/busybox', args: ['-sh'] })).toBe('sh');
    expect(programName({ exe: '/usr/bin/python3.12', args: ['python3'] })).toBe('python3');
    expect(programName({ exe: '/usr/bin/x', args: [], comm: 'x' })).toBe('x');
  });

  it('judges an exec whose executable could not be read by its task name, and reports what is known', () => {
    const named = ruleset(`apiVersion: runwatch/v1
kind: ImageProfile
name: app
images: [acme/app]
process:
  allow:
    - /usr/bin/{app,a-very-long-program-name}
    - /usr/local/bin/python3*
    - /opt/plugins/*
    - { exe: /bin/busybox, names: [sh] }
`);
    const unresolved = (comm: string | undefined) =>
      decide(
        named,
        exec({
          exe: '',
          args: [],
          resolved: false,
          pid: 4711,
          uid: 1000,
          ...(comm !== undefined && { comm }),
          ancestors: [{ pid: 7, exe: '/bin/busybox', comm: 'sh' }],
        }),
        {
          container: c,
        },
      );
    for (const allowed of ['app', 'a-very-long-pro', 'python3.12', 'sh']) expect(unresolved(allowed), allowed).toEqual([]);
    for (const unknown of ['curl', 'a-very-long-pr', 'a-very-long-pra', 'pyth', 'plugin', '', undefined])
      expect(rules(unresolved(unknown)), String(unknown)).toEqual(['process.unresolved']);
    const [f] = unresolved('curl');
    expect(f).toMatchObject({ rule: 'process.unresolved', severity: 'medium', profile: 'app', decidedBy: 'process.allow', subject: '\0curl' });
    expect(f.message).toBe(
      'A process named "curl" (pid 4711, uid 1000, parent /bin/busybox (pid 7)) ran in container app-1 (acme/app:1) and exited before its executable could be read; no program in process.allow of profile "app" has that name',
    );
    // Containers without a profile get no allowlist decision for it, as for any exec.
    expect(decide(named, exec({ exe: '', resolved: false, comm: 'curl' }), { container: container({ image: 'other/img:1' }) })).toEqual([]);
  });

  it('follows the policy: a rule turned off produces nothing, unprofiled may be ignored', () => {
    const quiet = ruleset(`apiVersion: runwatch/v1\nkind: ImagePolicy\nunprofiled: ignore\nseverities: { posture.root_user: "off" }\n`);
    expect(quiet.severity('posture.root_user')).toBeUndefined();
    expect(decide(quiet, lifecycle('start', c), { container: c })).toEqual([]);
  });
});

describe('ImageHistory storage', () => {
  it('creates its state folder, and gives up (counted) where none can be made', () => {
    const file = path.join(tempFile('d'), 'a', 'b', 'image-history.json');
    const h = new ImageHistory({ file, log: silentLogger });
    h.record('x:1', 'sha256:1', 'x@sha256:2', 5);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({
      version: 1,
      tags: { 'x:1': { imageId: 'sha256:1', digest: 'x@sha256:2', since: '1970-01-01T00:00:00.005Z' } },
    });
    const bad = new ImageHistory({ file: '/proc/runwatch-no-such-dir/h.json', log: silentLogger });
    bad.record('x:1', 'sha256:1', undefined, 0);
    expect(bad.stats.writeErrors).toBe(1);
  });
});
