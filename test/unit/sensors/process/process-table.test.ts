import { describe, expect, it } from 'vitest';
import { ProcessTable, type ProcessEntry } from '../../../../agent/sensors/process/process-table.js';

const C1 = '1'.repeat(64);
const C2 = '2'.repeat(64);

function entry(pid: number, ppid: number, extra: Partial<ProcessEntry> = {}): ProcessEntry {
  return { pid, ppid, containerId: '', exe: `/bin/p${pid}`, args: [`p${pid}`], comm: `p${pid}`, uid: 0, since: 0, ...extra };
}

describe('ProcessTable', () => {
  it('gives a forked child its parent container, program and user', () => {
    const t = new ProcessTable();
    t.set(entry(10, 1, { containerId: C1, exe: '/bin/sh', args: ['sh', '-c', 'x'], comm: 'sh', uid: 1000 }));
    const child = t.fork(10, 11, 100);
    expect(child).toEqual({ pid: 11, ppid: 10, containerId: C1, exe: '/bin/sh', args: ['sh', '-c', 'x'], comm: 'sh', uid: 1000, since: 100 });
    expect(t.get(11)).toBe(child);
    // A child of an unknown parent is a host process of unknown program.
    expect(t.fork(999, 12, 100)).toMatchObject({ ppid: 999, containerId: '', exe: '', uid: -1 });
  });

  it('replaces the program at exec and keeps the inherited container and user when the exec does not say', () => {
    const t = new ProcessTable();
    t.set(entry(10, 1, { containerId: C1, uid: 1000 }));
    t.fork(10, 11, 100);
    const e = t.exec(11, 101, { exe: '/usr/bin/id', args: ['id', '-u'], comm: 'id', containerId: '', ppid: 10 });
    expect(e).toMatchObject({ pid: 11, ppid: 10, containerId: C1, exe: '/usr/bin/id', args: ['id', '-u'], comm: 'id', uid: 1000, since: 100 });
    // What the exec read wins.
    t.exec(11, 102, { exe: '/bin/su', args: ['su'], comm: 'su', containerId: C2, uid: 0 });
    expect(t.get(11)).toMatchObject({ containerId: C2, uid: 0, exe: '/bin/su' });
  });

  it('does not pass the old program off as the new one when an exec could not be read', () => {
    const t = new ProcessTable();
    t.set(entry(10, 1, { containerId: C1, exe: '/bin/sh', comm: 'sh' }));
    t.fork(10, 11, 100);
    t.exec(11, 101, { exe: '', args: [], comm: 'whoami' });
    expect(t.get(11)).toMatchObject({ containerId: C1, exe: '', args: [], comm: 'whoami' });
    expect(t.ancestors(12, 1)).toEqual([]);
    t.fork(11, 12, 102);
    expect(t.ancestors(12, 5)[0]).toEqual({ pid: 11, exe: '', comm: 'whoami' });
  });

  it('creates an entry for an exec whose fork it missed', () => {
    const t = new ProcessTable();
    const e = t.exec(50, 500, { ppid: 49, containerId: C1, exe: '/bin/true', args: ['true'], comm: 'true', uid: 7 });
    expect(e).toEqual({ pid: 50, ppid: 49, containerId: C1, exe: '/bin/true', args: ['true'], comm: 'true', uid: 7, since: 500 });
  });

  it('keeps an exited process for the ancestry of its children, then prunes it', () => {
    const t = new ProcessTable({ keepExitedMs: 1000 });
    t.set(entry(10, 1, { containerId: C1 }));
    t.fork(10, 11, 100);
    t.exit(10, 200);
    expect(t.ancestors(11, 5)[0]).toMatchObject({ pid: 10, exe: '/bin/p10' });
    expect(t.get(10)?.exited).toBe(200);
    t.exit(11, 1199);
    expect(t.get(10)).toBeDefined();
    t.fork(1, 12, 1200);
    t.exit(12, 1200);
    expect(t.get(10)).toBeUndefined();
    expect(t.get(11)).toBeDefined();
    expect(t.size).toBe(2);
  });

  it('handles pid reuse: a fork replaces the old process, and pruning the old one leaves the new one', () => {
    const t = new ProcessTable({ keepExitedMs: 1000 });
    t.set(entry(10, 1, { containerId: C1 }));
    t.set(entry(20, 1, { containerId: C2, exe: '/bin/host' }));
    t.fork(10, 11, 100);
    t.exit(11, 150);
    // pid 11 comes back as a child of 20, in the other container.
    const reused = t.fork(20, 11, 300);
    expect(reused).toMatchObject({ ppid: 20, containerId: C2, exe: '/bin/host', since: 300 });
    expect(reused.exited).toBeUndefined();
    t.exit(20, 2000); // prunes the old 11 (exited at 150)
    expect(t.get(11)).toBe(reused);
    // An exec of a pid whose entry had exited starts afresh rather than inheriting the dead process.
    t.exit(11, 2001);
    const fresh = t.exec(11, 2002, { exe: '/bin/x', args: ['x'], comm: 'x' });
    expect(fresh).toMatchObject({ containerId: '', ppid: 0, since: 2002 });
    expect(fresh.exited).toBeUndefined();
  });

  it('bounds the ancestry, nearest first, and ends at an unknown parent', () => {
    const t = new ProcessTable();
    t.set(entry(1, 0, { comm: '' }));
    for (let pid = 2; pid <= 10; pid++) t.fork(pid - 1, pid, pid);
    expect(t.ancestors(10, 3).map((a) => a.pid)).toEqual([9, 8, 7]);
    expect(t.ancestors(10, 32).map((a) => a.pid)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1]);
    expect(t.ancestors(10, 0)).toEqual([]);
    // pid 1's entry has no comm: none is given.
    expect(t.ancestors(2, 1)).toEqual([{ pid: 1, exe: '/bin/p1' }]);
    t.exec(20, 20, { ppid: 19, exe: '/x', args: [], comm: 'x' });
    expect(t.ancestors(20, 5)).toEqual([{ pid: 19, exe: '' }]);
  });

  it('does not take a process that started after its descendant for an ancestor (reused pid), nor loop on a cycle', () => {
    const t = new ProcessTable();
    t.set(entry(5, 0, { since: 1000 }));
    t.set(entry(6, 5, { since: 500 }));
    expect(t.ancestors(6, 5)).toEqual([{ pid: 5, exe: '' }]);
    t.set(entry(7, 8, { since: 0 }));
    t.set(entry(8, 7, { since: 0 }));
    expect(t.ancestors(7, 10).map((a) => a.pid)).toEqual([8]);
  });

  it('names the most recently started live process of a container', () => {
    const t = new ProcessTable();
    expect(t.latestIn(C1)).toBeUndefined();
    t.set(entry(10, 1, { containerId: C1, since: 10 }));
    t.set(entry(30, 1, { containerId: C2, since: 30 }));
    t.fork(10, 11, 20);
    expect(t.latestIn(C1)?.pid).toBe(11);
    t.exec(11, 21, { exe: '/usr/bin/id', args: ['id'], comm: 'id' });
    expect(t.latestIn(C1)).toMatchObject({ pid: 11, exe: '/usr/bin/id' });
    expect(t.latestIn(C2)?.pid).toBe(30);
    t.exit(11, 22);
    expect(t.latestIn(C1)?.pid).toBe(10);
    t.exit(10, 23);
    expect(t.latestIn(C1)).toBeUndefined();
  });

  it('stays within its bound, dropping exited processes before live ones', () => {
    const t = new ProcessTable({ maxEntries: 4, keepExitedMs: 60_000 });
    for (let pid = 1; pid <= 4; pid++) t.set(entry(pid, 0));
    t.exit(3, 10);
    t.set(entry(5, 0));
    expect(t.size).toBe(4);
    expect(t.get(3)).toBeUndefined();
    expect(t.get(1)).toBeDefined();
    t.set(entry(6, 0));
    expect(t.size).toBe(4);
    expect(t.get(1)).toBeUndefined();
    expect(t.get(6)).toBeDefined();
  });
});
