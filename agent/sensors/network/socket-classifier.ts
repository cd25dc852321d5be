import { socketKey, TCP_STATE, type RawSocket } from './proc-net-table.js';

/** A socket worth an event: a new listener or a new outbound connection. */
export interface SocketCandidate {
  socket: RawSocket;
  direction: 'listen' | 'connect';
}

/** What one namespace remembers between reads of one table kind (TCP or UDP). */
export interface TableMemory {
  /** Keys of every socket in the last read. */
  keys: Set<string>;
  /** "tcp:8080" / "udp:53": ports seen listening, now or earlier (an accepting socket keeps its listener's port). */
  listenPorts: Map<string, true>;
}

export interface ClassifyOptions {
  /** Lower end of the namespace's ip_local_port_range. */
  ephemeralLow: number;
  /** How many remembered listening ports to keep. */
  maxListenPorts?: number;
}

export interface ClassifyResult {
  candidates: SocketCandidate[];
  /** New connected sockets judged inbound (accepted by a listener). */
  inbound: number;
  /** New unconnected UDP sockets on an ephemeral port, judged client sockets (e.g. a resolver's). */
  udpClients: number;
}

export function newTableMemory(): TableMemory {
  return { keys: new Set(), listenPorts: new Map() };
}

const isTcp = (s: RawSocket) => s.protocol === 'tcp' || s.protocol === 'tcp6';
/** tcp and tcp6 share a port space for this purpose: a dual-stack [::] listener accepts IPv4 too. */
const portKey = (s: RawSocket) => `${isTcp(s) ? 'tcp' : 'udp'}:${s.localPort}`;

function isListening(s: RawSocket): boolean {
  if (isTcp(s)) return s.state === TCP_STATE.LISTEN;
  return s.state === TCP_STATE.CLOSE && s.remotePort === 0;
}

/** A connection whose 4-tuple is known: every TCP state from SYN_SENT to TIME_WAIT except the server-side handshake. */
function isConnection(s: RawSocket): boolean {
  if (s.remotePort === 0) return false;
  if (!isTcp(s)) return s.state === TCP_STATE.ESTABLISHED;
  return s.state !== TCP_STATE.LISTEN && s.state !== TCP_STATE.CLOSE && s.state !== TCP_STATE.SYN_RECV && s.state !== TCP_STATE.NEW_SYN_RECV;
}

/**
 * Diffs one read of a namespace's TCP (or UDP) tables against the previous one and keeps the sockets that
 * are new listeners or new outbound connections. Updates `memory` in place.
 *
 * Outbound heuristic (the tables do not say who connected): a connection is outbound unless its local port
 * is (or was) a listening port of the namespace, or its local port is below the ephemeral range while the
 * remote port is inside it (the server side of a connection whose listener came and went between reads).
 * Unconnected UDP sockets are listeners unless bound to an ephemeral port (client sockets using sendto).
 */
export function classifyTable(current: readonly RawSocket[], memory: TableMemory, opts: ClassifyOptions): ClassifyResult {
  const max = opts.maxListenPorts ?? 4096;
  for (const s of current) {
    if (!isListening(s) || (!isTcp(s) && s.localPort >= opts.ephemeralLow)) continue;
    const k = portKey(s);
    memory.listenPorts.delete(k); // re-insert: the map's order is last-seen order, the oldest go first
    memory.listenPorts.set(k, true);
  }
  for (const k of memory.listenPorts.keys()) {
    if (memory.listenPorts.size <= max) break;
    memory.listenPorts.delete(k);
  }
  const result: ClassifyResult = { candidates: [], inbound: 0, udpClients: 0 };
  const keys = new Set<string>();
  for (const s of current) {
    const key = socketKey(s);
    keys.add(key);
    if (memory.keys.has(key)) continue;
    if (isListening(s)) {
      if (!isTcp(s) && s.localPort >= opts.ephemeralLow) result.udpClients++;
      else result.candidates.push({ socket: s, direction: 'listen' });
    } else if (isConnection(s)) {
      const inbound = memory.listenPorts.has(portKey(s)) || (s.localPort < opts.ephemeralLow && s.remotePort >= opts.ephemeralLow);
      if (inbound) result.inbound++;
      else result.candidates.push({ socket: s, direction: 'connect' });
    }
  }
  memory.keys = keys;
  return result;
}
