import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RunwatchError } from '../../../../agent/errors.js';
import {
  figuresFromV1,
  figuresFromV2,
  parseBlkioV1,
  parseFlatKeyed,
  parseIoStatV2,
  parseNetDev,
  parseProcCgroup,
  parseSingleValue,
  type FileText,
} from '../../../../agent/sensors/resources/cgroup-parsers.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../fixtures/cgroup');
const ID = 'c0ffee' + '0'.repeat(58);
const fixture = (rel: string): FileText => ({ path: rel, text: readFileSync(path.join(FIXTURES, rel), 'latin1') });
const inline = (text: string, p = 'inline'): FileText => ({ path: p, text });

function thrown(fn: () => unknown): RunwatchError {
  try {
    fn();
  } catch (err) {
    if (err instanceof RunwatchError) return err;
    throw err;
  }
  throw new Error('expected a RunwatchError');
}

describe('cgroup v1 files (captured from a container with -m 64m, 40 MiB in /dev/shm, 4 MiB direct write, 3 pids)', () => {
  const v1 = (controller: string, file: string) => fixture(`v1/${controller}/docker/${ID}/${file}`);
  const figures = figuresFromV1({
    cpuacctUsage: v1('cpuacct', 'cpuacct.usage'),
    memoryUsage: v1('memory', 'memory.usage_in_bytes'),
    memoryLimit: v1('memory', 'memory.limit_in_bytes'),
    memoryStat: v1('memory', 'memory.stat'),
    blkio: v1('blkio', 'blkio.throttle.io_service_bytes_recursive'),
    pids: v1('pids', 'pids.current'),
  });

  it('reads CPU time, memory, limit, block I/O and pids', () => {
    expect(figures).toEqual({
      cpuUsageNs: 57_824_909,
      memoryBytes: 42_885_120,
      memoryLimitBytes: 64 * 1024 * 1024,
      blockReadBytes: 0,
      blockWriteBytes: 4 * 1024 * 1024,
      pids: 3,
    });
  });

  it('takes the inactive file cache off the usage, as docker stats does', () => {
    const stat = inline('cache 100\ntotal_cache 3000\ntotal_inactive_file 2000\ntotal_active_file 1000\n');
    const f = figuresFromV1({
      cpuacctUsage: inline('1'),
      memoryUsage: inline('10000'),
      memoryLimit: inline('9223372036854771712'),
      memoryStat: stat,
      blkio: inline('Total 0\n'),
      pids: inline('1'),
    });
    expect(f.memoryBytes).toBe(8000);
    expect(f.memoryLimitBytes).toBeGreaterThan(9e18);
  });

  it('sums Read and Write over devices and ignores Sync/Async/Total', () => {
    expect(parseBlkioV1(inline('8:0 Read 100\n8:0 Write 5\n8:0 Sync 105\n8:0 Total 105\n254:0 Read 1\n254:0 Write 2\nTotal 108\n'))).toEqual({
      read: 101,
      write: 7,
    });
  });
});

describe('cgroup v2 files', () => {
  const v2 = (file: string) => fixture(`v2/system.slice/docker-${ID}.scope/${file}`);

  it('reads usage_usec, memory.current minus inactive_file, memory.max, io.stat and pids', () => {
    const figures = figuresFromV2({
      cpuStat: v2('cpu.stat'),
      memoryCurrent: v2('memory.current'),
      memoryMax: v2('memory.max'),
      memoryStat: v2('memory.stat'),
      ioStat: v2('io.stat'),
      pidsCurrent: v2('pids.current'),
    });
    expect(figures).toEqual({
      cpuUsageNs: 2_500_000_000,
      memoryBytes: 52_428_800 - 8_388_608,
      memoryLimitBytes: 128 * 1024 * 1024,
      blockReadBytes: 3 * 1024 * 1024,
      blockWriteBytes: 4 * 1024 * 1024,
      pids: 7,
    });
  });

  it('reads "max" as no limit and an empty io.stat as no I/O', () => {
    expect(parseSingleValue(inline('max\n'), 'memory.max')).toBe(Infinity);
    expect(parseIoStatV2(inline(''))).toEqual({ read: 0, write: 0 });
  });
});

describe('/proc/<pid>/net/dev', () => {
  it('sums every interface but lo, including counters glued to the colon', () => {
    expect(parseNetDev(fixture('proc/4343/net/dev'))).toEqual({ rx: 12_345_678_901 + 1000, tx: 2_000_000 + 500 });
  });

  it('gives zero for a --network none container, whose only interface is lo (captured with loopback traffic)', () => {
    const text = fixture('proc/4242/net/dev');
    expect(text.text).toMatch(/lo:\s+[1-9]/);
    expect(parseNetDev(text)).toEqual({ rx: 0, tx: 0 });
  });
});

describe('/proc/<pid>/cgroup', () => {
  it('finds the memory controller path on v1 and the unified path on v2', () => {
    const v1 = readFileSync(path.join(FIXTURES, 'proc/4242/cgroup'), 'latin1');
    expect(parseProcCgroup(v1, 1)).toBe(`/docker/${ID}`);
    expect(parseProcCgroup(v1, 2)).toBe(`/docker/${ID}`); // hybrid hosts also list the unified hierarchy
    expect(parseProcCgroup(readFileSync(path.join(FIXTURES, 'proc/5151/cgroup'), 'latin1'), 2)).toBe(`/system.slice/docker-${ID}.scope`);
    expect(parseProcCgroup('4:cpu,cpuacct:/x\n', 1)).toBeUndefined();
  });
});

describe('malformed files', () => {
  it('name the file, line and field', () => {
    const bad = thrown(() => parseBlkioV1(inline('8:0 Read 1\n8:0 Write lots\n', '/sys/fs/cgroup/blkio/x')));
    expect(bad).toMatchObject({ code: 'RW_SENSOR', file: '/sys/fs/cgroup/blkio/x', line: 2, field: 'Write' });
    expect(thrown(() => parseSingleValue(inline('-1\n', 'pids.current'), 'pids.current'))).toMatchObject({
      file: 'pids.current',
      line: 1,
      field: 'pids.current',
    });
    expect(thrown(() => parseFlatKeyed(inline('user_usec 5\n', 'cpu.stat'), ['usage_usec']))).toMatchObject({ file: 'cpu.stat', field: 'usage_usec' });
    expect(thrown(() => parseNetDev(inline('h\nh\n eth0: 1 2 3\n', 'net/dev')))).toMatchObject({ file: 'net/dev', line: 3, field: 'eth0' });
  });
});
