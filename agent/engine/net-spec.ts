import { isIPv4, isIPv6 } from 'node:net';

/**
 * Network allow entries: `network.listen` takes "proto:port" or "proto:addr:port", `network.connect`
 * takes "proto:addr:port"; proto is tcp, udp or *; addr is an address or CIDR (IPv6 in brackets:
 * "[fd00::/8]") or *; port is a number, a range "8000-8099" or *. A bare "*" allows everything.
 */
export type NetProto = 'tcp' | 'udp' | '*';

/** An IPv4 address as one uint32, or IPv6 as four; IPv4-mapped IPv6 addresses count as IPv4. */
export type IpAddr = { v: 4; n: number } | { v: 6; w: [number, number, number, number] };

export interface AddrRange {
  v: 4 | 6;
  /** Network words (one for IPv4, four for IPv6), masked. */
  net: number[];
  prefix: number;
}

export interface NetSpec {
  proto: NetProto;
  /** undefined = any address. */
  addr?: AddrRange;
  portLo: number;
  portHi: number;
  /** The entry as written. */
  source: string;
}

export class NetSpecError extends Error {
  constructor(
    message: string,
    /** The address or CIDR part is wrong (as opposed to the entry's shape, protocol or port). */
    readonly badAddress = false,
  ) {
    super(message);
  }
}

export function parseIp(text: string): IpAddr | undefined {
  const n = parseIpv4(text);
  if (n !== undefined) return { v: 4, n };
  if (!isIPv6(text)) return undefined;
  const w = ipv6ToWords(text);
  if (w[0] === 0 && w[1] === 0 && w[2] === 0xffff) return { v: 4, n: w[3] };
  return { v: 6, w };
}

/**
 * Dotted-quad IPv4 as node:net's isIPv4 accepts it (no leading zeros, each part ≤ 255), as one uint32;
 * by hand because every socket event's address goes through here.
 */
function parseIpv4(text: string): number | undefined {
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46 /* "." */) {
      if (digits === 0 || ++dots > 3) return undefined;
      n = n * 256 + part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return undefined;
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return undefined;
    } else return undefined;
  }
  if (dots !== 3 || digits === 0) return undefined;
  return n * 256 + part;
}

function ipv4ToInt(text: string): number {
  const p = text.split('.');
  return ((+p[0] << 24) | (+p[1] << 16) | (+p[2] << 8) | +p[3]) >>> 0;
}

function ipv6ToWords(text: string): [number, number, number, number] {
  let s = text;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  // A trailing dotted IPv4 part ("::ffff:10.0.0.1") becomes two hextets.
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const n = ipv4ToInt(tail);
    s = `${s.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, rest] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const r = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = rest === undefined ? h : [...h, ...Array<string>(8 - h.length - r.length).fill('0'), ...r];
  const hex = groups.map((g) => parseInt(g, 16));
  return [((hex[0] << 16) | hex[1]) >>> 0, ((hex[2] << 16) | hex[3]) >>> 0, ((hex[4] << 16) | hex[5]) >>> 0, ((hex[6] << 16) | hex[7]) >>> 0];
}

function maskWord(bits: number): number {
  if (bits <= 0) return 0;
  if (bits >= 32) return 0xffffffff;
  return (0xffffffff << (32 - bits)) >>> 0;
}

function words(ip: IpAddr): number[] {
  return ip.v === 4 ? [ip.n] : ip.w;
}

/** Parses "10.0.0.0/8", "10.1.2.3", "fd00::/8" (no brackets here). Host bits set under the mask are an error. */
export function parseAddrRange(text: string): AddrRange {
  const slash = text.indexOf('/');
  const addrText = slash >= 0 ? text.slice(0, slash) : text;
  const ip = parseIp(addrText);
  if (!ip) throw new NetSpecError(`"${addrText}" is not an IPv4 or IPv6 address`, true);
  const max = ip.v === 4 && isIPv4(addrText) ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || +p > max) throw new NetSpecError(`"/${p}" is not a prefix length between 0 and ${max}`, true);
    prefix = +p;
  }
  // An IPv4-mapped IPv6 range is kept in IPv4 terms.
  if (ip.v === 4 && max === 128) prefix = Math.max(0, prefix - 96);
  const w = words(ip);
  const net = w.map((word, i) => (word & maskWord(prefix - 32 * i)) >>> 0);
  if (net.some((word, i) => word !== w[i])) {
    throw new NetSpecError(
      `"${text}" has host bits set under /${slash >= 0 ? text.slice(slash + 1) : max}; the network is ${formatRange({ v: ip.v, net, prefix })}`,
      true,
    );
  }
  return { v: ip.v, net, prefix };
}

export function formatRange(r: AddrRange): string {
  if (r.v === 4) {
    const n = r.net[0];
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/${r.prefix}`;
  }
  const hextets: string[] = [];
  for (const word of r.net) hextets.push((word >>> 16).toString(16), (word & 0xffff).toString(16));
  return `${hextets.join(':')}/${r.prefix}`;
}

export function inRange(ip: IpAddr, r: AddrRange): boolean {
  if (ip.v !== r.v) return false;
  if (ip.v === 4) return (ip.n & maskWord(r.prefix)) >>> 0 === r.net[0];
  for (let i = 0; i < 4; i++) {
    if ((ip.w[i] & maskWord(r.prefix - 32 * i)) >>> 0 !== r.net[i]) return false;
  }
  return true;
}

function parsePort(text: string): [number, number] {
  if (text === '*') return [0, 65535];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  if (!m) throw new NetSpecError(`"${text}" is not a port, a port range (8000-8099) or *`);
  const lo = +m[1];
  const hi = m[2] !== undefined ? +m[2] : lo;
  if (hi > 65535) throw new NetSpecError(`port ${hi} is above 65535`);
  if (lo > hi) throw new NetSpecError(`port range ${text} runs backwards`);
  return [lo, hi];
}

function parseProto(text: string): NetProto {
  if (text === 'tcp' || text === 'udp' || text === '*') return text;
  throw new NetSpecError(`"${text}" is not a protocol (tcp, udp or *)`);
}

/** Splits "proto:rest" and "addr:port" where addr may be "[v6]" or "[v6/len]". */
function splitAddrPort(text: string): { addr: string; port: string } {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') throw new NetSpecError(`"${text}" should be "[IPv6 or CIDR]:port"`);
    return { addr: text.slice(1, close), port: text.slice(close + 2) };
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0) throw new NetSpecError(`"${text}" should be "address:port"`);
  const addr = text.slice(0, colon);
  if (addr.includes(':')) throw new NetSpecError(`IPv6 addresses go in brackets: "[${addr}]:${text.slice(colon + 1)}"`);
  return { addr, port: text.slice(colon + 1) };
}

function addrOf(text: string): AddrRange | undefined {
  return text === '*' ? undefined : parseAddrRange(text);
}

export function parseListenSpec(text: string): NetSpec {
  if (text === '*') return { proto: '*', portLo: 0, portHi: 65535, source: text };
  const colon = text.indexOf(':');
  if (colon < 0) throw new NetSpecError(`"${text}" should be "proto:port" or "proto:addr:port" (e.g. tcp:80)`);
  const proto = parseProto(text.slice(0, colon));
  const rest = text.slice(colon + 1);
  if (!rest.includes(':')) {
    const [portLo, portHi] = parsePort(rest);
    return { proto, portLo, portHi, source: text };
  }
  const { addr, port } = splitAddrPort(rest);
  const [portLo, portHi] = parsePort(port);
  return { proto, addr: addrOf(addr), portLo, portHi, source: text };
}

export function parseConnectSpec(text: string): NetSpec {
  if (text === '*') return { proto: '*', portLo: 0, portHi: 65535, source: text };
  const colon = text.indexOf(':');
  if (colon < 0) throw new NetSpecError(`"${text}" should be "proto:addr:port" (e.g. tcp:10.0.0.0/8:5432)`);
  const proto = parseProto(text.slice(0, colon));
  const { addr, port } = splitAddrPort(text.slice(colon + 1));
  const [portLo, portHi] = parsePort(port);
  return { proto, addr: addrOf(addr), portLo, portHi, source: text };
}

/** An endpoint from an event: "addr:port" or "[v6]:port". */
export interface Endpoint {
  ip?: IpAddr;
  addr: string;
  port: number;
}

export function parseEndpoint(text: string | undefined): Endpoint | undefined {
  if (!text) return undefined;
  let addr: string;
  let port: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return undefined;
    addr = text.slice(1, close);
    port = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return undefined;
    addr = text.slice(0, colon);
    port = text.slice(colon + 1);
  }
  const n = Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) return undefined;
  return { ip: parseIp(addr), addr, port: n };
}

export function protoBase(protocol: string): 'tcp' | 'udp' {
  return protocol.startsWith('udp') ? 'udp' : 'tcp';
}

export function specMatches(spec: NetSpec, proto: 'tcp' | 'udp', ep: Endpoint): boolean {
  if (spec.proto !== '*' && spec.proto !== proto) return false;
  if (ep.port < spec.portLo || ep.port > spec.portHi) return false;
  if (!spec.addr) return true;
  return ep.ip !== undefined && inRange(ep.ip, spec.addr);
}

/** "addr:port" as a rule writer writes it: IPv6 in brackets. */
export function formatEndpoint(ep: Endpoint): string {
  return ep.addr.includes(':') ? `[${ep.addr}]:${ep.port}` : `${ep.addr}:${ep.port}`;
}
