import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { loadProcConnector } from '../../../../agent/sensors/process/proc-connector.js';
import { containerIdFromCgroup, parsePasswd, parseStat, readFileBeneath, readProcess, ttyName } from '../../../../agent/sensors/process/procfs.js';

const ID = 'a392bdcef780c8475afba28740981a635e89f5b2db57de39afe3a76af3166be7';
const OTHER = 'b'.repeat(64);

/** [cgroup file content, expected id]; the native reader must agree on every one. */
const CGROUP_CASES: [string, string, string][] = [
  ['cgroup v1 hybrid, cgroupfs driver (this host)', `12:rdma:/\n11:memory:/docker/${ID}\n0::/docker/${ID}\n`, ID],
  ['cgroup v1, systemd driver', `1:name=systemd:/system.slice/docker-${ID}.scope\n`, ID],
  ['cgroup v2, cgroupfs driver', `0::/docker/${ID}\n`, ID],
  ['cgroup v2, systemd driver', `0::/system.slice/docker-${ID}.scope\n`, ID],
  ['cgroup v2, a process in a sub-cgroup of the container', `0::/docker/${ID}/init\n`, ID],
  ['containerd under Kubernetes', `0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-${ID}.scope\n`, ID],
  ['cgroupfs Kubernetes', `0::/kubepods/burstable/pod1234/${ID}\n`, ID],
  ['nested engine: the outer (host engine) id wins', `0::/docker/${ID}/docker/${OTHER}\n`, ID],
  ['host process, v2', '0::/\n', ''],
  ['host process in a systemd session', '0::/user.slice/user-0.slice/session-1.scope\n', ''],
  ['32 hex digits are no container id', '4:memory:/process_api/29c0cd84387b0852c9b88d02404e0fd5\n', ''],
  ['65 hex digits are no container id', `0::/docker/${ID}0\n`, ''],
  ['an id glued to other text is none', `0::/x${ID}\n`, ''],
  ['hex in the controller field does not count', `${ID}:/\n`, ''],
  ['empty file', '', ''],
];

describe('containerIdFromCgroup', () => {
  it.each(CGROUP_CASES)('%s', (_what, content, expected) => {
    expect(containerIdFromCgroup(content)).toBe(expected);
  });

  // The reader thread parses in C++; the two must not drift apart.
  it.runIf(loadProcConnector().available)('agrees with the native reader on every case', () => {
    const addon = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../build/Release/proc_connector.node');
    const native = createRequire(import.meta.url)(addon) as { containerIdFromCgroup(s: string): string };
    for (const [what, content, expected] of CGROUP_CASES) expect(native.containerIdFromCgroup(content), what).toBe(expected);
  });
});

describe('ttyName', () => {
  // tty_nr is new_encode_dev(): minor low byte in bits 0-7, major in 8-19, the rest of the minor from bit 20.
  const enc = (major: number, minor: number) => (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);

  it('names pseudo terminals, virtual consoles, serial lines and the console', () => {
    expect(ttyName(enc(136, 0))).toBe('pts/0');
    expect(ttyName(enc(136, 3))).toBe('pts/3');
    expect(ttyName(enc(136, 300))).toBe('pts/300');
    expect(ttyName(enc(4, 1))).toBe('tty1');
    expect(ttyName(enc(4, 64))).toBe('ttyS0');
    expect(ttyName(enc(5, 1))).toBe('console');
  });

  it('gives undefined for no terminal and major:minor for an unknown one', () => {
    expect(ttyName(0)).toBeUndefined();
    expect(ttyName(enc(188, 2))).toBe('tty(188:2)');
  });
});

describe('parsePasswd', () => {
  it('maps uids to names, the first entry of a uid winning, and skips malformed lines', () => {
    const names = parsePasswd(
      [
        'root:x:0:0:root:/root:/bin/sh',
        '# comment',
        '',
        'app:x:1000:1000::/home/app:/bin/sh',
        'toor:x:0:0::/root:/bin/sh',
        'broken:x',
        'neg:x:-1:0::/:/bin/sh',
        ':x:7:7::/:/bin/sh',
        'nobody:x:65534:65534::/:/sbin/nologin',
      ].join('\n'),
    );
    expect([...names]).toEqual([
      [0, 'root'],
      [1000, 'app'],
      [65534, 'nobody'],
    ]);
  });

  it('gives an empty map for an empty file', () => {
    expect(parsePasswd('').size).toBe(0);
  });
});

describe('parseStat', () => {
  it('reads ppid, tty and start time after a comm holding spaces and parentheses', () => {
    const rest = 'S 41 42 42 34816 42 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 200';
    expect(parseStat(42, `42 (a) b (c)) ${rest}`)).toEqual({ pid: 42, ppid: 41, comm: 'a) b (c)', tty: 34816, startTicks: 987654 });
  });

  it('gives undefined for truncated content', () => {
    expect(parseStat(1, '1 (init) S 0')).toBeUndefined();
    expect(parseStat(1, 'garbage')).toBeUndefined();
  });
});

describe('readProcess', () => {
  it('reads this very process', () => {
    const me = readProcess(process.pid);
    expect(me?.exe).toBe(process.execPath);
    expect(me?.ppid).toBe(process.ppid);
    expect(me?.uid).toBe(process.getuid!());
    expect(me?.args.slice(1)).toEqual([...process.execArgv, ...process.argv.slice(1)]);
    expect(me?.comm).toBe(readFileSync('/proc/self/comm', 'utf8').trim());
    expect(me?.containerId).toBe(containerIdFromCgroup(readFileSync('/proc/self/cgroup', 'utf8')));
  });

  it('gives undefined for a pid that does not exist', () => {
    expect(readProcess(2 ** 22 + 1)).toBeUndefined();
  });
});

describe('readFileBeneath', () => {
  function root(): string {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-beneath-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(path.join(dir, 'etc'));
    return dir;
  }

  it('reads a regular file', () => {
    const dir = root();
    writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    expect(readFileBeneath(dir, 'etc/passwd')).toBe('root:x:0:0::/root:/bin/sh\n');
  });

  it('follows no symlink, neither of the file nor of a directory on the way', () => {
    const outside = root();
    writeFileSync(path.join(outside, 'etc/secret'), 'host file\n');
    const a = root();
    symlinkSync(path.join(outside, 'etc/secret'), path.join(a, 'etc/passwd'));
    expect(readFileBeneath(a, 'etc/passwd')).toBeUndefined();
    const b = root();
    rmSync(path.join(b, 'etc'), { recursive: true });
    symlinkSync(path.join(outside, 'etc'), path.join(b, 'etc'));
    writeFileSync(path.join(outside, 'etc/passwd'), 'host passwd\n');
    expect(readFileBeneath(b, 'etc/passwd')).toBeUndefined();
    expect(readFileBeneath(a, '../etc/passwd')).toBeUndefined();
  });

  it('does not open a FIFO (which would block the agent) and refuses files over the size limit', () => {
    const dir = root();
    execFileSync('mkfifo', [path.join(dir, 'etc/passwd')]);
    expect(readFileBeneath(dir, 'etc/passwd')).toBeUndefined();
    writeFileSync(path.join(dir, 'etc/group'), 'x'.repeat(2048));
    expect(readFileBeneath(dir, 'etc/group', 1024)).toBeUndefined();
    expect(readFileBeneath(dir, 'etc/group', 4096)).toHaveLength(2048);
  });

  it('gives undefined for a missing file or root', () => {
    expect(readFileBeneath(root(), 'etc/passwd')).toBeUndefined();
    expect(readFileBeneath('/nonexistent-rw-root', 'etc/passwd')).toBeUndefined();
  });
});
