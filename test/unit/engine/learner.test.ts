import { describe, expect, it } from 'vitest';
import type { Decider } from '../../../agent/engine/engine.js';
import { generalisePaths, learnedLists, literalGlob, muteLearnedActivity, ProfileLearner } from '../../../agent/engine/learner.js';
import { PathMatcher } from '../../../agent/engine/path-matcher.js';
import type { Finding } from '../../../agent/events/types.js';
import { connect, container, exec, listen, toolsBehaviour, write } from './learner-fixtures.js';

const counts = (entries: { value: unknown; count: number }[]) => entries.map((e) => [e.value, e.count]);

describe('generalisePaths', () => {
  const paths = (list: string[]) => new Map(list.map((p, i) => [p, i + 1]));

  it('turns 5 distinct names in a directory at depth 2 or more into dir/**, keeping the directory itself literal', () => {
    const m = paths(['/var/cache/app', '/var/cache/app/a', '/var/cache/app/b', '/var/cache/app/c', '/var/cache/app/d', '/var/cache/app/sub/e']);
    const out = generalisePaths(m);
    expect(out.map((e) => e.value)).toEqual(['/var/cache/app', '/var/cache/app/**']);
    expect(out[1]).toMatchObject({ count: 2 + 3 + 4 + 5 + 6, note: '5 paths' });
  });

  it('keeps 4 siblings literal', () => {
    const m = paths(['/var/cache/app/a', '/var/cache/app/b', '/var/cache/app/c', '/var/cache/app/d']);
    expect(generalisePaths(m).map((e) => e.value)).toEqual(['/var/cache/app/a', '/var/cache/app/b', '/var/cache/app/c', '/var/cache/app/d']);
  });

  it('never generalises a top-level directory such as /tmp or /data', () => {
    const m = paths(Array.from({ length: 20 }, (_, i) => `/tmp/f${String(i).padStart(2, '0')}`));
    const out = generalisePaths(m);
    expect(out).toHaveLength(20);
    expect(out.every((e) => !String(e.value).includes('*'))).toBe(true);
  });

  it('picks the shallowest qualifying directory and counts what it stands for', () => {
    const deep = Array.from({ length: 6 }, (_, i) => `/srv/app/x/f${i}`);
    const m = paths(['/srv/app/a', '/srv/app/b', '/srv/app/c', '/srv/app/d', ...deep]);
    expect(generalisePaths(m).map((e) => [e.value, e.note])).toEqual([['/srv/app/**', '10 paths']]);
    expect(generalisePaths(m, { minSiblings: 6, minDepth: 2 }).map((e) => e.value)).toEqual([
      '/srv/app/a',
      '/srv/app/b',
      '/srv/app/c',
      '/srv/app/d',
      '/srv/app/x/**',
    ]);
  });

  it('escapes glob characters so a literal entry matches only its own path', () => {
    const odd = ['/app/[x]*', '/app/!(y)', '/app/+@(z)?'];
    const out = generalisePaths(paths(odd));
    const matcher = new PathMatcher(out.map((e) => ({ profile: 'p', file: 'f', line: 1, entry: String(e.value) })));
    for (const p of odd) expect(matcher.matches(p)).toBe(true);
    for (const p of ['/app/x', '/app/[x]y', '/app/y', '/app/z']) expect(matcher.matches(p)).toBe(false);
    const dir = generalisePaths(paths(['a', 'b', 'c', 'd', 'e'].map((n) => `/app/[v]/${n}`)));
    expect(dir.map((e) => e.value)).toEqual([`${literalGlob('/app/[v]')}/**`]);
  });

  it('escapes braces so a path named "{a,b}" is not read as two paths', () => {
    const [entry] = generalisePaths(new Map([['/app/{a,b}', 1]]));
    const matcher = new PathMatcher([{ profile: 'p', file: 'f', line: 1, entry: String(entry.value) }]);
    expect(matcher.matches('/app/{a,b}')).toBe(true);
    expect(matcher.matches('/app/a')).toBe(false);
  });
});

describe('ProfileLearner', () => {
  it('learns the containers of matching images only, by normalised reference or repo digest', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:*', 'acr.example.io/web@sha256:*'] });
    expect(learner.learns(container('1', 'runwatch-test/tools:1'))).toBe(true);
    expect(learner.learns(container('2', 'docker.io/runwatch-test/tools:2'))).toBe(true);
    expect(learner.learns(container('3', 'runwatch-test/busybox:1'))).toBe(false);
    expect(learner.learns(container('4', `sha256:${'c'.repeat(64)}`, { imageRepoDigests: [`acr.example.io/web@sha256:${'d'.repeat(64)}`] }))).toBe(true);
  });

  it('lists executables, busybox applets as { exe, names }, paths, ports and destinations with their counts', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:1'] });
    const tools = container('1');
    const other = container('2', 'runwatch-test/busybox:1');
    for (const ev of [...toolsBehaviour(tools), exec(other, '/bin/evil', ['evil']), write(other, '/etc/evil')])
      learner.observe(ev, ev.containerId === tools.id ? tools : other);
    const lists = learner.lists();
    expect(counts(lists.process)).toEqual([
      [{ exe: '/bin/busybox', names: ['mkdir', 'sh', 'touch'] }, 3],
      ['/usr/bin/id', 2],
      ['/usr/bin/sleep', 1],
      ['/usr/bin/whoami', 1],
    ]);
    expect(lists.process[0].note).toBe('mkdir 1, sh 1, touch 1');
    expect(counts(lists.write)).toEqual([
      ['/data', 1],
      ['/data/out.txt', 2],
      ['/var', 1],
      ['/var/cache', 1],
      ['/var/cache/app', 1],
      ['/var/cache/app/**', 6],
    ]);
    expect(counts(lists.listen)).toEqual([['tcp:8080', 1]]);
    expect(counts(lists.connect)).toEqual([['tcp:127.0.0.1:5432', 1]]);
    expect(learner.observed.containers.size).toBe(1);
    expect(learner.observed.events).toBe(toolsBehaviour(tools).length);
  });

  it('sorts ports and addresses numerically and keeps IPv6 in brackets', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:1'] });
    const c = container('1');
    for (const ev of [
      listen(c, '0.0.0.0:10000', 'tcp'),
      listen(c, '127.0.0.1:53', 'udp'),
      listen(c, '[::]:8080'),
      connect(c, '[fd00::1]:443', 'tcp6'),
      connect(c, '10.0.0.9:443'),
      connect(c, '9.9.9.9:53', 'udp'),
      connect(c, '10.0.0.10:80'),
    ]) {
      learner.observe(ev, c);
    }
    const lists = learner.lists();
    expect(lists.listen.map((e) => e.value)).toEqual(['tcp:8080', 'tcp:10000', 'udp:53']);
    expect(lists.connect.map((e) => e.value)).toEqual(['tcp:10.0.0.9:443', 'tcp:10.0.0.10:80', 'tcp:[fd00::1]:443', 'udp:9.9.9.9:53']);
  });

  it('holds events that came before the container was known and learns them once it is', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:1'] });
    const c = container('1');
    const stranger = container('9', 'runwatch-test/busybox:1');
    learner.observe(exec(c, '/usr/bin/sleep', ['sleep', 'infinity']), undefined);
    learner.observe(exec(stranger, '/bin/sh', ['sh']), undefined);
    expect(learner.lists().process).toEqual([]);
    learner.observe({ kind: 'container', ts: 1, action: 'start', containerId: c.id, info: c }, c);
    learner.observe({ kind: 'container', ts: 1, action: 'start', containerId: stranger.id, info: stranger }, stranger);
    expect(learner.lists().process.map((e) => e.value)).toEqual(['/usr/bin/sleep']);
    expect(learner.observed.containers.size).toBe(1);
  });

  it('counts unreadable executables and names a multi-call entry cannot list, and marks drift', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:1'] });
    const c = container('1');
    for (const ev of [exec(c, '', []), exec(c, '/bin/busybox', ['[', '-f', 'x'], { argv0: '[' }), exec(c, '/tmp/dropped', ['dropped'], { inUpperLayer: true })])
      learner.observe(ev, c);
    const lists = learner.lists();
    expect(learner.observed.unresolvedExecs).toBe(1);
    expect(lists.unlisted).toEqual(['/bin/busybox as "["']);
    expect(lists.process).toEqual([{ value: '/tmp/dropped', count: 1, note: '1 from a file written after start (process.drift still alerts)' }]);
  });

  it('leaves out what an existing profile allows', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:1'] });
    const c = container('1');
    for (const ev of toolsBehaviour(c)) learner.observe(ev, c);
    const lists = learnedLists(learner.observed, undefined, {
      process: (exe, name) => exe === '/usr/bin/id' || (exe === '/bin/busybox' && name === 'sh'),
      write: (p) => p.startsWith('/var'),
      listen: (_proto, ep) => ep.port === 8080,
      connect: () => false,
    });
    expect(lists.process.map((e) => e.value)).toEqual([{ exe: '/bin/busybox', names: ['mkdir', 'touch'] }, '/usr/bin/sleep', '/usr/bin/whoami']);
    expect(lists.write.map((e) => e.value)).toEqual(['/data', '/data/out.txt']);
    expect(lists.listen).toEqual([]);
    expect(lists.connect.map((e) => e.value)).toEqual(['tcp:127.0.0.1:5432']);
  });
});

describe('muteLearnedActivity', () => {
  const findings: Finding[] = [
    { kind: 'alert', rule: 'process.not_allowed', severity: 'high', message: 'x' },
    { kind: 'alert', rule: 'posture.root_user', severity: 'medium', message: 'y' },
    { kind: 'alert', rule: 'network.listen_not_allowed', severity: 'medium', message: 'z' },
  ];
  const inner: Decider = { decide: () => findings };

  it('drops allowlist findings of learned containers, counts them, and keeps posture findings', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:1'] });
    const d = muteLearnedActivity(inner, learner);
    const c = container('1');
    expect(d.decide(exec(c, '/x', ['x']), { container: c }).map((f) => f.rule)).toEqual(['posture.root_user']);
    expect(learner.muted).toBe(2);
  });

  it('passes everything for other containers and for events without a container', () => {
    const learner = new ProfileLearner({ images: ['runwatch-test/tools:1'] });
    const d = muteLearnedActivity(inner, learner);
    const other = container('2', 'runwatch-test/busybox:1');
    expect(d.decide(exec(other, '/x', ['x']), { container: other })).toHaveLength(3);
    expect(d.decide(exec(other, '/x', ['x']), {})).toHaveLength(3);
    expect(learner.muted).toBe(0);
  });
});
