import { minimatch } from 'minimatch';
import { describe, expect, it } from 'vitest';
import { compileGlob, escapeGlob, globProblem, PathMatcher, prefixTrie } from '../../../agent/engine/path-matcher.js';

const origins = (entries: string[]) => entries.map((entry, i) => ({ profile: 'p', file: '/rules/p.yaml', line: 10 + i, entry }));

describe('glob checks', () => {
  it.each([
    ['/usr/bin/[ab', /"\[" that is never closed/],
    ['/usr/{bin,sbin/x', /"\{" that is never closed/],
    ['/usr/bin/a]', /"\]" without its "\["/],
    ['/usr/bin}/a', /"\}" without its "\{"/],
    ['usr/bin/a', /absolute/],
    ['{/usr,usr}/bin/a', /absolute/],
    ['/usr/../etc/passwd', /"\.\." segments/],
    ['!/usr/bin/a', /negation/],
    [' /usr/bin/a', /spaces/],
    ['', /empty/],
  ])('rejects %s', (glob, why) => {
    expect(globProblem(glob, { absolute: true })).toMatch(why);
  });

  it.each([
    '/usr/bin/a',
    '/usr/lib/postgresql/*/bin/*',
    '{/usr,}/bin/{sh,dash}',
    '/var/cache/**',
    '/a/[[:alpha:]]x',
    '/a/\\[literal\\]',
    '/a/[!b]c',
    '/a/[]]b',
  ])('accepts %s', (glob) => {
    expect(globProblem(glob, { absolute: true })).toBeUndefined();
  });

  it('compiles literal brace expansions to exact paths and the rest to RegExps', () => {
    expect(compileGlob('{/usr,}/bin/{sh,dash}').exact.sort()).toEqual(['/bin/dash', '/bin/sh', '/usr/bin/dash', '/usr/bin/sh']);
    expect(compileGlob('{/usr,}/bin/{sh,dash}').re).toBeUndefined();
    const mixed = compileGlob('/bin/{sh,*.sh}');
    expect(mixed.exact).toEqual(['/bin/sh']);
    expect(mixed.re?.test('/bin/x.sh')).toBe(true);
  });
});

describe('PathMatcher', () => {
  const globs = ['/usr/sbin/nginx', '{/usr,}/bin/{sh,dash}', '/var/cache/nginx/**', '/opt/*/bin/*', '/srv/logs/*.{log,gz}', '/a/[[:alpha:]]x', '/tmp/[!.]*'];
  const m = new PathMatcher(origins(globs));
  const corpus = [
    '/usr/sbin/nginx',
    '/usr/sbin/nginx2',
    '/bin/sh',
    '/usr/bin/dash',
    '/usr/bin/bash',
    '/var/cache/nginx/a/b/c',
    '/var/cache/nginx/.hidden',
    '/var/cache/nginxx/a',
    '/opt/app/bin/run',
    '/opt/app/x/bin/run',
    '/opt/.app/bin/run',
    '/srv/logs/a.log',
    '/srv/logs/a.txt',
    '/srv/logs/x/a.log',
    '/a/bx',
    '/a/1x',
    '/tmp/file',
    '/tmp/.file',
    '/etc/passwd',
  ];

  it.each(corpus)('agrees with minimatch on %s', (p) => {
    expect(m.matches(p)).toBe(globs.some((g) => minimatch(p, g, { dot: true })));
  });

  it('answers a path it has seen before as it did the first time', () => {
    const entries = ['/var/cache/**', '/srv/*.log', '/etc/app.conf'].map((entry) => ({ profile: 'p', file: 'f', line: 1, entry }));
    const paths = ['/var/cache/a/b', '/srv/x.log', '/srv/x.txt', '/etc/app.conf', '/etc/other', '/var/cachex'];
    const fresh = paths.map((p) => new PathMatcher(entries).matches(p));
    expect(fresh).toEqual([true, true, false, true, false, false]);
    const m = new PathMatcher(entries);
    for (let round = 0; round < 3; round++) expect(paths.map((p) => m.matches(p))).toEqual(fresh);
  });

  it('a folder glob also covers the folder itself', () => {
    expect(m.matches('/var/cache/nginx')).toBe(true);
  });

  it('names the entry that decided', () => {
    expect(m.explain('/usr/bin/dash')).toMatchObject({ entry: '{/usr,}/bin/{sh,dash}', line: 11 });
    expect(m.explain('/opt/x/bin/y')).toMatchObject({ entry: '/opt/*/bin/*', line: 13 });
    expect(m.explain('/etc/passwd')).toBeUndefined();
    expect(m.size).toBe(globs.length + 3);
  });
});

describe('escaped literals and joined RegExps', () => {
  it('an escaped path matches only itself, braces included', () => {
    const m = new PathMatcher(origins([escapeGlob('/app/{a,b}'), `${escapeGlob('/tmp/a*b[1]')}/*`]));
    expect(m.matches('/app/{a,b}')).toBe(true);
    expect(m.matches('/app/a')).toBe(false);
    expect(m.matches('/tmp/a*b[1]/x')).toBe(true);
    expect(m.matches('/tmp/aXb1/x')).toBe(false);
  });

  it('shares literal prefixes without changing what matches', () => {
    expect(prefixTrie(['^\\/opt\\/a\\/x$', '^\\/opt\\/a\\/y[^/]*?$', '^\\/opt\\/b$', '^a*b$'])).toBe('(?:\\/opt\\/(?:a\\/(?:x$|y[^/]*?$)|b$)|a*b$)');
    // Many globs over a shared tree against a random corpus: the joined matcher agrees with each glob's own RegExp.
    const globs = [
      '/opt/app/*/bin/*',
      '/opt/app/m1/**',
      '/opt/apx/{a,b}*',
      '/usr/lib/*.so.[0-9]',
      '/usr/lib/python3*/**/*.py',
      '/srv/*/logs/*.{log,gz}',
      '/var/**/cache',
      '/etc/a?c',
    ];
    const m = new PathMatcher(origins(globs));
    const res = globs.map((g) => compileGlob(g).re!);
    const words = [
      'opt',
      'app',
      'apx',
      'm1',
      'bin',
      'usr',
      'lib',
      'python3.12',
      'x.py',
      'libc.so.6',
      'srv',
      'web',
      'logs',
      'a.log',
      'b.gz',
      'var',
      'cache',
      'etc',
      'abc',
      'a',
      'bb',
      '.hidden',
    ];
    let seed = 1;
    const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % n;
    let matched = 0;
    for (let i = 0; i < 20_000; i++) {
      const depth = 1 + rnd(5);
      const path = '/' + Array.from({ length: depth }, () => words[rnd(words.length)]).join('/');
      const expected = res.some((re) => re.test(path));
      if (m.matches(path) !== expected) expect.fail(`${path}: matcher ${!expected}, globs ${expected}`);
      if (expected) matched++;
    }
    // The corpus holds both kinds.
    expect(matched).toBeGreaterThan(50);
    expect(matched).toBeLessThan(20_000);
  });
});
