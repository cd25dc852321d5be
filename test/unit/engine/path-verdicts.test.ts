import { minimatch } from 'minimatch';
import { describe, expect, it } from 'vitest';
import { PathMatcher } from '../../../agent/engine/path-matcher.js';
import { ALLOWED, DENIED, PathVerdictTable, UNKNOWN } from '../../../agent/engine/path-verdicts.js';

const origins = (entries: string[]) => entries.map((entry, i) => ({ profile: 'p', file: '/rules/p.yaml', line: 1 + i, entry }));

/** Paths that differ from each other in one character, in length, or only past the inline part. */
function lookAlikes(): string[] {
  const long = `/usr/lib/python3.11/site-packages/pkg/${'sub/'.repeat(6)}`;
  return [
    '/bin/sh',
    '/bin/sh ',
    '/bin/sH',
    '/bin/s',
    '/bin/dash',
    '/usr/bin/tool17-3',
    '/usr/bin/tool18-3',
    '/usr/bin/tool17-4',
    `${long}mod.py`,
    `${long}mod.pz`,
    `${long}mod.py2`,
    '/srv/caf\u00e9/a',
    '/srv/caf\u0165/a',
    '/srv/caf\u0065/a',
    '/srv/\u{1F600}/a',
    '/srv/\u{1F601}/a',
    '/x/\u0100',
    '/x/\u0000',
    '/x/',
    '',
  ];
}

describe('PathVerdictTable', () => {
  it('knows literal entries exactly: a path one character, one length or one list away is not allowed', () => {
    const paths = lookAlikes();
    const t = new PathVerdictTable();
    const a = t.newList();
    const b = t.newList();
    const allowedInA = paths.filter((_, i) => i % 2 === 0);
    for (const p of allowedInA) t.addLiteral(a, p);
    for (const p of paths) {
      // New string objects: the table must compare contents, not identities.
      const fresh = Buffer.from(p, 'utf16le').toString('utf16le');
      expect(t.verdict(a, fresh), p).toBe(allowedInA.includes(p) ? ALLOWED : UNKNOWN);
      expect(t.verdict(b, fresh), p).toBe(UNKNOWN);
    }
  });

  it('remembers answers per list, keeps literal entries when it forgets, and grows without losing any', () => {
    const t = new PathVerdictTable(300, 12345);
    const a = t.newList();
    const b = t.newList();
    for (let i = 0; i < 200; i++) t.addLiteral(a, `/usr/bin/tool${i}`);
    expect(t.size).toBe(200);
    for (let i = 0; i < 250; i++) {
      const p = `/var/cache/app/${i}/blob`;
      expect(t.verdict(b, p)).toBe(UNKNOWN);
      t.remember(b, p, i % 3 !== 0);
    }
    expect(t.remembered).toBe(250);
    for (let i = 0; i < 250; i++) expect(t.verdict(b, `/var/cache/app/${i}/blob`)).toBe(i % 3 !== 0 ? ALLOWED : DENIED);
    // Past the limit every remembered answer goes at once; literal entries never do.
    for (let i = 250; i < 400; i++) t.remember(b, `/var/cache/app/${i}/blob`, true);
    expect(t.remembered).toBeLessThanOrEqual(300);
    expect(t.verdict(b, '/var/cache/app/0/blob')).toBe(UNKNOWN);
    for (let i = 0; i < 200; i++) expect(t.verdict(a, `/usr/bin/tool${i}`)).toBe(ALLOWED);
  });

  it('refuses literal entries once it has answered lookups', () => {
    const t = new PathVerdictTable();
    const a = t.newList();
    t.addLiteral(a, '/bin/sh');
    t.remember(a, '/tmp/x', false);
    expect(() => t.addLiteral(a, '/bin/ls')).toThrow(/before lookups/);
  });

  it('tells apart hundreds of paths that differ in one character, in one list', () => {
    const t = new PathVerdictTable(10_000, 0);
    const list = t.newList();
    const paths = Array.from({ length: 500 }, (_, i) => `/data/${String(i).padStart(4, '0')}.db`);
    paths.forEach((p, i) => i % 2 === 0 && t.addLiteral(list, p));
    paths.forEach((p, i) => expect(t.verdict(list, p)).toBe(i % 2 === 0 ? ALLOWED : UNKNOWN));
  });
});

describe('PathVerdictTable when hashes collide', () => {
  // Paths of one length whose 32-bit hashes are equal (found by trying): only the comparison of the
  // characters and of the list can tell them apart.
  const t = new PathVerdictTable(1000, 1);
  const a = t.newList();
  const b = t.newList();
  // A table with the same seed that holds nothing: every lookup misses and leaves the key's hash behind.
  const hasher = new PathVerdictTable(1000, 1);
  const hashOf = (list: number, path: string): number => {
    hasher['lookup'](list, path);
    return hasher['lastHash'];
  };
  // Every character random: paths that differ in one word only never collide (each step is a bijection).
  let x = 42;
  const path = () => {
    let out = '/srv/data/';
    for (let k = 0; k < 16; k++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      out += String.fromCharCode(97 + ((x >>> 16) % 26));
    }
    return out;
  };
  const collide = (listX: number, listY: number): [string, string] => {
    const seen = new Map<number, string>();
    for (let i = 0; i < 2_000_000; i++) {
      const p = path();
      const other = seen.get(hashOf(listY, p));
      if (other !== undefined && other !== p) return [other, p];
      seen.set(hashOf(listX, p), p);
    }
    throw new Error('no collision found');
  };
  const [samePathA, samePathB] = collide(a, a);
  it('does not give one path the verdict of another with the same hash', () => {
    expect(hashOf(a, samePathA)).toBe(hashOf(a, samePathB));
    t.addLiteral(a, samePathA);
    t.addLiteral(b, samePathB);
    expect(t.verdict(a, samePathA)).toBe(ALLOWED);
    expect(t.verdict(a, samePathB)).toBe(UNKNOWN);
    t.remember(a, samePathB, false);
    expect(t.verdict(a, samePathB)).toBe(DENIED);
    expect(t.verdict(a, samePathA)).toBe(ALLOWED);
  });

  it("never gives one path the same hash in two lists (so a list cannot borrow another list's verdict)", () => {
    // The list seeds the hash and every step after is a bijection: equal hashes would need equal lists.
    const hashes = new Set<number>();
    for (let list = 1; list <= 200_000; list++) hashes.add(hashOf(list, '/usr/local/bin/app'));
    expect(hashes.size).toBe(200_000);
    expect(t.verdict(b, samePathB)).toBe(ALLOWED);
    expect(t.verdict(b, samePathA)).toBe(UNKNOWN);
  });
});

describe('PathMatcher over a PathVerdictTable', () => {
  const globs = ['/usr/bin/{sh,dash}', '/opt/*/bin/*', '/var/cache/**', '/srv/logs/*.{log,gz}', '/etc/app.conf', '/srv/caf\u00e9/*', '/x/\u0165'];
  const corpus = [
    '/usr/bin/sh',
    '/usr/bin/dash',
    '/usr/bin/bash',
    '/opt/a/bin/x',
    '/opt/a/b/bin/x',
    '/var/cache',
    '/var/cache/a/b/c',
    '/var/cachex',
    '/srv/logs/a.log',
    '/srv/logs/a.txt',
    '/etc/app.conf',
    '/etc/app.con',
    '/srv/caf\u00e9/menu',
    '/srv/cafe/menu',
    '/x/\u0165',
    '/x/\u0065',
    `/var/cache/${'deep/'.repeat(30)}file`,
  ];

  it('answers as a matcher without the table does, the first time and from memory, with two matchers sharing it', () => {
    const table = new PathVerdictTable();
    const otherGlobs = ['/usr/bin/bash', '/srv/logs/**'];
    const withTable = new PathMatcher(origins(globs), table);
    const other = new PathMatcher(origins(otherGlobs), table);
    const reference = new PathMatcher(origins(globs));
    const otherReference = new PathMatcher(origins(otherGlobs));
    for (let round = 0; round < 3; round++) {
      for (const p of corpus) {
        expect(withTable.matches(p), p).toBe(reference.matches(p));
        expect(other.matches(p), p).toBe(otherReference.matches(p));
      }
    }
    expect(table.remembered).toBeGreaterThan(0);
    // And the reference itself is minimatch, apart from a folder glob covering its folder.
    for (const p of corpus.filter((x) => x !== '/var/cache')) expect(reference.matches(p), p).toBe(globs.some((g) => minimatch(p, g, { dot: true })));
  });
});
