import { endianness } from 'node:os';
import type { NetProtocol } from '../../events/types.js';
import { RunwatchError } from '../../errors.js';

/**
 * Parsers for the kernel's socket tables (/proc/<pid>/net/{tcp,tcp6,udp,udp6}) and the per-namespace
 * counters (/proc/<pid>/net/{sockstat,sockstat6,snmp}) the sensor uses to tell whether a table changed.
 */

/** One row of a socket table, kept raw: addresses are decoded only for sockets that become events. */
export interface RawSocket {
  protocol: NetProtocol;
  /** "HEXADDR:HEXPORT" exactly as the kernel printed it. */
  localHex: string;
  remoteHex: string;
  localPort: number;
  remotePort: number;
  /** Kernel socket state (TCP_ESTABLISHED = 1 … TCP_NEW_SYN_RECV = 12); UDP uses 1 (connected) and 7 (unconnected). */
  state: number;
  /** Socket inode; 0 for TIME_WAIT and other sockets no file refers to. */
  inode: number;
}

export const TCP_STATE = { ESTABLISHED: 1, SYN_SENT: 2, SYN_RECV: 3, TIME_WAIT: 6, CLOSE: 7, LISTEN: 10, NEW_SYN_RECV: 12 } as const;

const TCP_STATE_NAMES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
];

/** The state as `ss` names it (an unconnected UDP socket is "UNCONN"). */
export function stateName(protocol: NetProtocol, state: number): string {
  if ((protocol === 'udp' || protocol === 'udp6') && state === TCP_STATE.CLOSE) return 'UNCONN';
  return TCP_STATE_NAMES[state] ?? `STATE_${state}`;
}

/** Unique within one namespace's tables: protocol plus both endpoints (a socket keeps it from SYN_SENT to TIME_WAIT). */
export function socketKey(s: RawSocket): string {
  return `${s.protocol} ${s.localHex} ${s.remoteHex}`;
}

/**
 * Parses one socket table. `file` names the source in errors. A line the kernel would never print is a
 * RunwatchError naming the file, line and field (the caller counts it and keeps the previous table).
 */
export function parseSocketTable(text: string, protocol: NetProtocol, file: string): RawSocket[] {
  const out: RawSocket[] = [];
  const addrLen = protocol === 'tcp6' || protocol === 'udp6' ? 32 : 8;
  let start = text.indexOf('\n') + 1; // the first line is the header
  let lineNo = 1;
  while (start > 0 && start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    lineNo++;
    const line = text.slice(start, end);
    start = end + 1;
    if (line.trim() === '') continue;
    // sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode …
    const f = line.trim().split(/\s+/);
    const bad = (field: string) =>
      new RunwatchError('RW_SENSOR', `malformed socket table line: ${JSON.stringify(line.slice(0, 120))}`, { file, line: lineNo, field });
    if (f.length < 10) throw bad('fields');
    const [localHex, remoteHex, stateHex, inodeText] = [f[1], f[2], f[3], f[9]];
    if (!isEndpointHex(localHex, addrLen)) throw bad('local_address');
    if (!isEndpointHex(remoteHex, addrLen)) throw bad('rem_address');
    const state = parseInt(stateHex, 16);
    if (!/^[0-9A-Fa-f]{2}$/.test(stateHex)) throw bad('st');
    if (!/^\d+$/.test(inodeText)) throw bad('inode');
    out.push({
      protocol,
      localHex,
      remoteHex,
      localPort: parseInt(localHex.slice(addrLen + 1), 16),
      remotePort: parseInt(remoteHex.slice(addrLen + 1), 16),
      state,
      inode: Number(inodeText),
    });
  }
  return out;
}

function isEndpointHex(s: string, addrLen: number): boolean {
  if (s.length !== addrLen + 5 || s[addrLen] !== ':') return false;
  for (let i = 0; i < s.length; i++) {
    if (i === addrLen) continue;
    const c = s.charCodeAt(i) | 0x20;
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** The kernel prints each 32-bit word of an address in host byte order. */
const LITTLE_ENDIAN = endianness() === 'LE';

function addressBytes(hex: string, addrLen: number): number[] {
  const bytes: number[] = [];
  for (let w = 0; w < addrLen; w += 8) {
    const word = [0, 2, 4, 6].map((i) => parseInt(hex.slice(w + i, w + i + 2), 16));
    bytes.push(...(LITTLE_ENDIAN ? word.reverse() : word));
  }
  return bytes;
}

/** An address as people write it: dotted IPv4, RFC 5952 IPv6 (IPv4-mapped as "::ffff:a.b.c.d"). */
export function decodeAddress(hex: string, protocol: NetProtocol): string {
  const v6 = protocol === 'tcp6' || protocol === 'udp6';
  const b = addressBytes(hex, v6 ? 32 : 8);
  if (!v6) return b.join('.');
  if (b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `::ffff:${b.slice(12).join('.')}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // The longest run of two or more zero groups (the first one on a tie) becomes "::".
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestAt, bestLen] = [i, j - i];
    i = j;
  }
  const hexGroups = groups.map((g) => g.toString(16));
  if (bestAt < 0) return hexGroups.join(':');
  return `${hexGroups.slice(0, bestAt).join(':')}::${hexGroups.slice(bestAt + bestLen).join(':')}`;
}

/** "addr:port", IPv6 as "[addr]:port" (the form NetSocketEvent carries). */
export function decodeEndpoint(endpointHex: string, protocol: NetProtocol): string {
  const colon = endpointHex.indexOf(':');
  const addr = decodeAddress(endpointHex.slice(0, colon), protocol);
  const port = parseInt(endpointHex.slice(colon + 1), 16);
  return protocol === 'tcp6' || protocol === 'udp6' ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/**
 * Per-namespace counters that move whenever a socket table changes in a way the sensor cares about.
 * Reading them costs microseconds; reading a TCP table walks the kernel's whole established hash (shared
 * by all namespaces), which costs milliseconds. See docs/sensors-network.md.
 */
export interface NetCounters {
  tcpInuse: number;
  tcp6Inuse: number;
  tcpTimeWait: number;
  udpInuse: number;
  udp6Inuse: number;
  activeOpens: number;
  passiveOpens: number;
  attemptFails: number;
  estabResets: number;
  currEstab: number;
}

/** Parses sockstat ("TCP: inuse 3 orphan 0 tw 1 …"), sockstat6 ("TCP6: inuse 1") and snmp ("Tcp: …" header and value lines). */
export function parseNetCounters(sockstat: string, sockstat6: string, snmp: string, file = 'net counters'): NetCounters {
  const tcpMib = parseSnmpSection(snmp, 'Tcp', file);
  return {
    tcpInuse: statValue(sockstat, 'TCP: ', ' inuse '),
    tcpTimeWait: statValue(sockstat, 'TCP: ', ' tw '),
    udpInuse: statValue(sockstat, 'UDP: ', ' inuse '),
    tcp6Inuse: statValue(sockstat6, 'TCP6: ', ' inuse '),
    udp6Inuse: statValue(sockstat6, 'UDP6: ', ' inuse '),
    activeOpens: tcpMib.ActiveOpens ?? 0,
    passiveOpens: tcpMib.PassiveOpens ?? 0,
    attemptFails: tcpMib.AttemptFails ?? 0,
    estabResets: tcpMib.EstabResets ?? 0,
    currEstab: tcpMib.CurrEstab ?? 0,
  };
}

/** The number after `key` on the line starting with `line` ("TCP: inuse 3 …"); 0 when absent. Runs every poll: no regex. */
function statValue(text: string, line: string, key: string): number {
  const at = lineStart(text, line);
  if (at < 0) return 0;
  const end = text.indexOf('\n', at);
  const k = text.indexOf(key, at);
  if (k < 0 || (end >= 0 && k > end)) return 0;
  return parseInt(text.slice(k + key.length, k + key.length + 20), 10) || 0;
}

function lineStart(text: string, prefix: string): number {
  if (text.startsWith(prefix)) return 0;
  const i = text.indexOf(`\n${prefix}`);
  return i < 0 ? -1 : i + 1;
}

/** Header lines of /proc/net/snmp sections never change on a running kernel: split each once. */
const snmpKeys = new Map<string, string[]>();

/** The "Name: keys…" / "Name: values…" line pair of /proc/net/snmp as a record. */
export function parseSnmpSection(snmp: string, section: string, file: string): Record<string, number> {
  const prefix = `${section}: `;
  const at = lineStart(snmp, prefix);
  if (at < 0) return {};
  const keysEnd = snmp.indexOf('\n', at);
  const keysLine = snmp.slice(at + prefix.length, keysEnd < 0 ? undefined : keysEnd);
  let keys = snmpKeys.get(keysLine);
  if (!keys) {
    keys = keysLine.trim().split(' ');
    if (snmpKeys.size < 16) snmpKeys.set(keysLine, keys);
  }
  const valuesAt = keysEnd + 1;
  const valuesEnd = snmp.indexOf('\n', valuesAt);
  const values =
    keysEnd > 0 && snmp.startsWith(prefix, valuesAt)
      ? snmp
          .slice(valuesAt + prefix.length, valuesEnd < 0 ? undefined : valuesEnd)
          .trim()
          .split(' ')
      : [];
  if (values.length !== keys.length) {
    const line = snmp.slice(0, valuesAt).split('\n').length;
    throw new RunwatchError('RW_SENSOR', `${section} counters: ${keys.length} names but ${values.length} values`, { file, line, field: section });
  }
  const out: Record<string, number> = {};
  for (let i = 0; i < keys.length; i++) out[keys[i]] = Number(values[i]);
  return out;
}

/** What changed in the TCP tables (any difference means "read them"). */
export function tcpFingerprint(c: NetCounters): string {
  return `${c.tcpInuse} ${c.tcp6Inuse} ${c.tcpTimeWait} ${c.activeOpens} ${c.passiveOpens} ${c.attemptFails} ${c.estabResets} ${c.currEstab}`;
}

export function udpFingerprint(c: NetCounters): string {
  return `${c.udpInuse} ${c.udp6Inuse}`;
}

/** "32768\t60999" (ip_local_port_range) → [32768, 60999]; the kernel default when unreadable. */
export function parsePortRange(text: string | undefined): [number, number] {
  const m = /^\s*(\d+)\s+(\d+)/.exec(text ?? '');
  return m ? [Number(m[1]), Number(m[2])] : [32768, 60999];
}
