import { isIPv4 } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  formatEndpoint,
  NetSpecError,
  parseAddrRange,
  parseConnectSpec,
  parseEndpoint,
  parseIp,
  parseListenSpec,
  specMatches,
} from '../../../agent/engine/net-spec.js';

const ep = (s: string) => parseEndpoint(s)!;

describe('network allow entries', () => {
  it('parses listen entries', () => {
    expect(parseListenSpec('tcp:80')).toEqual({ proto: 'tcp', portLo: 80, portHi: 80, source: 'tcp:80' });
    expect(parseListenSpec('udp:8000-8099')).toMatchObject({ proto: 'udp', portLo: 8000, portHi: 8099 });
    expect(parseListenSpec('*:*')).toMatchObject({ proto: '*', portLo: 0, portHi: 65535 });
    expect(parseListenSpec('*')).toMatchObject({ proto: '*', portLo: 0, portHi: 65535 });
    expect(parseListenSpec('udp:127.0.0.1:*').addr).toEqual({ v: 4, net: [0x7f000001], prefix: 32 });
  });

  it('parses connect entries with CIDRs, IPv6 in brackets', () => {
    expect(parseConnectSpec('tcp:10.0.0.0/8:5432')).toMatchObject({ proto: 'tcp', portLo: 5432, addr: { v: 4, net: [0x0a000000], prefix: 8 } });
    expect(parseConnectSpec('udp:*:53')).toEqual({ proto: 'udp', portLo: 53, portHi: 53, source: 'udp:*:53' });
    expect(parseConnectSpec('tcp:[fd00::/8]:443').addr).toEqual({ v: 6, net: [0xfd000000, 0, 0, 0], prefix: 8 });
    expect(parseConnectSpec('tcp:[::1]:443').addr).toEqual({ v: 6, net: [0, 0, 0, 1], prefix: 128 });
  });

  it.each([
    ['tcp:10.0.0.0/33:5432', true, /prefix length/],
    ['tcp:10.0.0.300/8:5432', true, /not an IPv4 or IPv6 address/],
    ['tcp:10.1.2.3/8:5432', true, /host bits set.*10\.0\.0\.0\/8/],
    ['tcp:[fd00::/129]:1', true, /prefix length/],
    ['tcp:fd00::1:443', false, /brackets/],
    ['tcp:10.0.0.1:70000', false, /above 65535/],
    ['tcp:10.0.0.1:90-80', false, /backwards/],
    ['sctp:10.0.0.1:80', false, /protocol/],
    ['tcp:10.0.0.1', false, /port/],
  ])('rejects %s', (spec, badAddress, message) => {
    let err: unknown;
    try {
      parseConnectSpec(spec);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NetSpecError);
    expect((err as NetSpecError).badAddress).toBe(badAddress);
    expect((err as Error).message).toMatch(message);
  });

  it('matches protocol, port range and address range', () => {
    const s = parseConnectSpec('tcp:10.0.0.0/8:5000-5999');
    expect(specMatches(s, 'tcp', ep('10.255.0.1:5432'))).toBe(true);
    expect(specMatches(s, 'udp', ep('10.255.0.1:5432'))).toBe(false);
    expect(specMatches(s, 'tcp', ep('11.0.0.1:5432'))).toBe(false);
    expect(specMatches(s, 'tcp', ep('10.0.0.1:6000'))).toBe(false);
    expect(specMatches(parseConnectSpec('tcp:0.0.0.0/0:1'), 'tcp', ep('203.0.113.9:1'))).toBe(true);
  });

  it('matches IPv6 ranges and treats IPv4-mapped addresses as IPv4', () => {
    const v6 = parseConnectSpec('tcp:[2001:db8::/32]:443');
    expect(specMatches(v6, 'tcp', ep('[2001:db8:ffff::1]:443'))).toBe(true);
    expect(specMatches(v6, 'tcp', ep('[2001:db9::1]:443'))).toBe(false);
    expect(specMatches(v6, 'tcp', ep('10.0.0.1:443'))).toBe(false);
    expect(parseIp('::ffff:10.1.2.3')).toEqual({ v: 4, n: 0x0a010203 });
    expect(specMatches(parseConnectSpec('tcp:10.0.0.0/8:443'), 'tcp', ep('[::ffff:10.1.2.3]:443'))).toBe(true);
    expect(parseAddrRange('::ffff:10.0.0.0/104')).toEqual({ v: 4, net: [0x0a000000], prefix: 8 });
  });

  it('reads event endpoints', () => {
    expect(parseEndpoint('[fe80::1%eth0]:22')).toMatchObject({ addr: 'fe80::1%eth0', port: 22 });
    expect(parseEndpoint('0.0.0.0:80')).toMatchObject({ port: 80, ip: { v: 4, n: 0 } });
    expect(parseEndpoint('garbage')).toBeUndefined();
    expect(parseEndpoint('1.2.3.4:99999')).toBeUndefined();
    expect(parseEndpoint(undefined)).toBeUndefined();
    expect(formatEndpoint(ep('[::1]:53'))).toBe('[::1]:53');
  });

  it('reads IPv4 addresses exactly as node:net tells them apart', () => {
    const texts = [
      '0.0.0.0',
      '255.255.255.255',
      '10.0.0.1',
      '1.2.3.4',
      '01.2.3.4',
      '1.2.3.04',
      '256.1.1.1',
      '1.2.3',
      '1.2.3.4.5',
      '1..3.4',
      '.1.2.3',
      '1.2.3.',
      '1.2.3.4 ',
      '1.2.3.a',
      '',
      '::1',
      '1234.1.1.1',
    ];
    for (const t of texts) expect(parseIp(t)?.v === 4 && !t.includes(':'), t).toBe(isIPv4(t));
    expect(parseIp('192.168.1.254')).toEqual({ v: 4, n: 0xc0a801fe });
  });
});
