import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { NetProtocol } from '../../../../agent/events/types.js';
import { decodeEndpoint, parseSocketTable, stateName, type RawSocket } from '../../../../agent/sensors/network/proc-net-table.js';
import { classifyTable, newTableMemory, type ClassifyResult } from '../../../../agent/sensors/network/socket-classifier.js';

const table = (dir: string, ...protocols: NetProtocol[]): RawSocket[] =>
  protocols.flatMap((p) => parseSocketTable(readFileSync(new URL(`../../../fixtures/net/${dir}/${p}`, import.meta.url), 'latin1'), p, p));

/** "direction protocol local [> remote] STATE" for each candidate, readable in a failing diff. */
const describeCandidates = (r: ClassifyResult) =>
  r.candidates.map(
    ({ socket: s, direction }) =>
      `${direction} ${s.protocol} ${decodeEndpoint(s.localHex, s.protocol)}${direction === 'connect' ? ` > ${decodeEndpoint(s.remoteHex, s.protocol)}` : ''} ${stateName(s.protocol, s.state)}`,
  );

const opts = { ephemeralLow: 32768 };

describe('socket classification', () => {
  it('finds the listeners and the outbound connections of a real container and skips the accepted side', () => {
    const memory = newTableMemory();
    const r = classifyTable(table('busybox', 'tcp', 'tcp6'), memory, opts);
    expect(describeCandidates(r)).toEqual([
      'listen tcp 127.0.0.1:8080 LISTEN',
      'connect tcp 127.0.0.1:58296 > 127.0.0.1:5555 ESTABLISHED',
      'connect tcp 127.0.0.1:56548 > 127.0.0.1:8080 ESTABLISHED',
      'listen tcp6 [::]:4444 LISTEN',
    ]);
    // 8080's accepted side by its listener; 5555's (listener already closed) by the ephemeral-port rule.
    expect(r.inbound).toBe(2);
  });

  it('reports nothing the second time it reads the same table', () => {
    const memory = newTableMemory();
    classifyTable(table('busybox', 'tcp', 'tcp6'), memory, opts);
    const again = classifyTable(table('busybox', 'tcp', 'tcp6'), memory, opts);
    expect(again.candidates).toEqual([]);
    expect(again.inbound).toBe(0);
  });

  it('reports a socket again once it left the table and came back', () => {
    const memory = newTableMemory();
    const rows = table('busybox', 'tcp');
    classifyTable(rows, memory, opts);
    classifyTable(rows.slice(1), memory, opts);
    expect(describeCandidates(classifyTable(rows, memory, opts))).toEqual(['listen tcp 127.0.0.1:8080 LISTEN']);
  });

  it('remembers a listening port, so a connection accepted after the listener closed is still inbound', () => {
    const memory = newTableMemory();
    const listener: RawSocket = {
      protocol: 'tcp6',
      localHex: '00000000000000000000000000000000:1F40',
      remoteHex: '00000000000000000000000000000000:0000',
      localPort: 8000,
      remotePort: 0,
      state: 10,
      inode: 1,
    };
    classifyTable([listener], memory, opts);
    // An accepted connection from a client that bound a low port: only the remembered listener tells it apart.
    const accepted: RawSocket = {
      protocol: 'tcp',
      localHex: '0100007F:1F40',
      remoteHex: '0100007F:0400',
      localPort: 8000,
      remotePort: 1024,
      state: 1,
      inode: 2,
    };
    const r = classifyTable([accepted], memory, opts);
    expect(r.candidates).toEqual([]);
    expect(r.inbound).toBe(1);
    const fresh = classifyTable([accepted], newTableMemory(), opts);
    expect(describeCandidates(fresh)).toEqual(['connect tcp 127.0.0.1:8000 > 127.0.0.1:1024 ESTABLISHED']);
  });

  it('classifies IPv6 listeners, connecting and closing connections, and the loopback pair', () => {
    const r = classifyTable(table('crafted', 'tcp6'), newTableMemory(), opts);
    expect(describeCandidates(r)).toEqual([
      'listen tcp6 [::1]:8443 LISTEN',
      'connect tcp6 [2001:db8::1]:40000 > [2001:db8::10]:443 ESTABLISHED',
      'connect tcp6 [2001:db8::1]:40002 > [2001:db8::1:0:0:1]:22 SYN_SENT',
      'connect tcp6 [2001:db8::1]:40001 > [2001:db8::10]:443 TIME_WAIT',
      'connect tcp6 [::1]:40010 > [::1]:8443 ESTABLISHED',
    ]);
    expect(r.inbound).toBe(1);
  });

  it('treats unconnected UDP as listening unless on an ephemeral port, and connected UDP as outbound', () => {
    const r = classifyTable(table('crafted', 'udp', 'udp6'), newTableMemory(), opts);
    expect(describeCandidates(r)).toEqual([
      'listen udp 0.0.0.0:53 UNCONN',
      'connect udp 127.0.0.1:41000 > 127.0.0.1:53 ESTABLISHED',
      'listen udp6 [::]:5353 UNCONN',
    ]);
    expect(r.inbound).toBe(1);
    expect(r.udpClients).toBe(1);
    // The resolver-style socket syslogd uses in the captured container.
    expect(classifyTable(table('busybox', 'udp', 'udp6'), newTableMemory(), opts)).toMatchObject({ candidates: [], udpClients: 1 });
  });

  it('keeps a bounded number of remembered listening ports, dropping the least recently seen', () => {
    const memory = newTableMemory();
    const listener = (port: number): RawSocket => ({
      protocol: 'tcp',
      localHex: `00000000:${port.toString(16).toUpperCase().padStart(4, '0')}`,
      remoteHex: '00000000:0000',
      localPort: port,
      remotePort: 0,
      state: 10,
      inode: port,
    });
    for (let p = 1000; p < 1010; p++) classifyTable([listener(p)], memory, { ...opts, maxListenPorts: 4 });
    expect([...memory.listenPorts.keys()]).toEqual(['tcp:1006', 'tcp:1007', 'tcp:1008', 'tcp:1009']);
  });
});
