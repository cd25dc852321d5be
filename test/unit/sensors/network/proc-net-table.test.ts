import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RunwatchError } from '../../../../agent/errors.js';
import {
  decodeAddress,
  decodeEndpoint,
  parseNetCounters,
  parsePortRange,
  parseSnmpSection,
  parseSocketTable,
  stateName,
  tcpFingerprint,
} from '../../../../agent/sensors/network/proc-net-table.js';

// busybox/: captured from a --network none runwatch-test/busybox:1 container (httpd on 127.0.0.1:8080, nc -l on
// 4444 and 5555, nc clients to 5555 and 8080, syslogd -R sending UDP). crafted/: kernel-format rows for what
// that container cannot make (IPv6 addresses, UDP listeners), written with the kernel's little-endian words.
const fixture = (name: string) => readFileSync(new URL(`../../../fixtures/net/${name}`, import.meta.url), 'latin1');

describe('socket table parser', () => {
  it('reads every row of a captured tcp table with ports, state and inode', () => {
    const rows = parseSocketTable(fixture('busybox/tcp'), 'tcp', 'tcp');
    expect(rows).toHaveLength(4);
    expect(rows[0]).toEqual({
      protocol: 'tcp',
      localHex: '0100007F:1F90',
      remoteHex: '00000000:0000',
      localPort: 8080,
      remotePort: 0,
      state: 10,
      inode: 1031166,
    });
    expect(rows.map((r) => `${decodeEndpoint(r.localHex, 'tcp')}>${decodeEndpoint(r.remoteHex, 'tcp')} ${stateName('tcp', r.state)}`)).toEqual([
      '127.0.0.1:8080>0.0.0.0:0 LISTEN',
      '127.0.0.1:58296>127.0.0.1:5555 ESTABLISHED',
      '127.0.0.1:8080>127.0.0.1:56548 ESTABLISHED',
      '127.0.0.1:56548>127.0.0.1:8080 ESTABLISHED',
    ]);
  });

  it('reads tcp6 rows, including the dual-stack listener and IPv4-mapped peers', () => {
    const rows = parseSocketTable(fixture('busybox/tcp6'), 'tcp6', 'tcp6');
    expect(rows.map((r) => [decodeEndpoint(r.localHex, 'tcp6'), decodeEndpoint(r.remoteHex, 'tcp6'), r.inode])).toEqual([
      ['[::]:4444', '[::]:0', 1032196],
      ['[::ffff:127.0.0.1]:5555', '[::ffff:127.0.0.1]:58296', 1032205],
    ]);
  });

  it('reads udp tables, whose first column is a hash bucket, not a row number', () => {
    const rows = parseSocketTable(fixture('crafted/udp'), 'udp', 'udp');
    expect(rows.map((r) => [r.localPort, r.remotePort, stateName('udp', r.state)])).toEqual([
      [53, 0, 'UNCONN'],
      [41000, 53, 'ESTABLISHED'],
      [53, 41001, 'ESTABLISHED'],
      [45000, 0, 'UNCONN'],
    ]);
    expect(parseSocketTable(fixture('busybox/udp6'), 'udp6', 'udp6')).toEqual([]);
  });

  it('writes IPv6 addresses the RFC 5952 way', () => {
    const rows = parseSocketTable(fixture('crafted/tcp6'), 'tcp6', 'tcp6');
    expect(rows.map((r) => decodeEndpoint(r.localHex, 'tcp6'))).toEqual([
      '[::1]:8443',
      '[2001:db8::1]:40000',
      '[2001:db8::1]:40002',
      '[2001:db8::1]:40001',
      '[::1]:8443',
      '[::1]:40010',
    ]);
    // Two runs of two zero groups: the first one is shortened.
    expect(decodeEndpoint(rows[2].remoteHex, 'tcp6')).toBe('[2001:db8::1:0:0:1]:22');
    expect(decodeAddress('00000000000000000000000000000000', 'tcp6')).toBe('::');
    expect(decodeAddress('B80D0120010000000200000003000000', 'tcp6')).toBe('2001:db8:0:1:0:2:0:3');
    expect(decodeAddress('00000000', 'udp')).toBe('0.0.0.0');
  });

  it('rejects a row the kernel would never print, naming file, line and field', () => {
    let err: unknown;
    try {
      parseSocketTable(fixture('malformed-tcp'), 'tcp', '/proc/42/net/tcp');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RunwatchError);
    expect(err).toMatchObject({ code: 'RW_SENSOR', file: '/proc/42/net/tcp', line: 3, field: 'local_address' });
    expect(() => parseSocketTable('header\n   0: 0100007F:1F90 00000000:0000 0A\n', 'tcp', 'short')).toThrow(
      expect.objectContaining({ line: 2, field: 'fields' }),
    );
    expect(() => parseSocketTable('header\n   0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 x1\n', 'tcp', 'inode')).toThrow(
      expect.objectContaining({ field: 'inode' }),
    );
  });
});

describe('namespace counters', () => {
  it('reads inuse, time-wait and the TCP MIB from sockstat, sockstat6 and snmp', () => {
    const c = parseNetCounters(fixture('busybox/sockstat'), fixture('busybox/sockstat6'), fixture('busybox/snmp'));
    expect(c).toEqual({
      tcpInuse: 4,
      tcp6Inuse: 2,
      tcpTimeWait: 0,
      udpInuse: 1,
      udp6Inuse: 0,
      activeOpens: 2,
      passiveOpens: 2,
      attemptFails: 0,
      estabResets: 0,
      currEstab: 4,
    });
  });

  it('gives a different TCP fingerprint when a connection opened, even if the socket count is the same', () => {
    const before = parseNetCounters(fixture('busybox/sockstat'), fixture('busybox/sockstat6'), fixture('busybox/snmp'));
    expect(tcpFingerprint({ ...before, activeOpens: before.activeOpens + 1 })).not.toBe(tcpFingerprint(before));
    expect(tcpFingerprint({ ...before })).toBe(tcpFingerprint(before));
  });

  it('reports a snmp section whose names and values disagree', () => {
    expect(() => parseSnmpSection('Tcp: A B\nTcp: 1\n', 'Tcp', '/proc/1/net/snmp')).toThrow(
      expect.objectContaining({ code: 'RW_SENSOR', line: 2, field: 'Tcp' }),
    );
    expect(parseSnmpSection('Udp: A\nUdp: 7\n', 'Tcp', 'x')).toEqual({});
  });

  it('reads the ephemeral port range, with the kernel default when absent', () => {
    expect(parsePortRange('1024\t65000\n')).toEqual([1024, 65000]);
    expect(parsePortRange(undefined)).toEqual([32768, 60999]);
  });
});
