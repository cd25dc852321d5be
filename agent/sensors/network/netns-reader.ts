import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import type { NetProtocol } from '../../events/types.js';
import { parseNetCounters, parseSocketTable, type NetCounters, type RawSocket } from './proc-net-table.js';

const TABLES = { tcp: ['tcp', 'tcp6'], udp: ['udp', 'udp6'] } as const satisfies Record<string, readonly NetProtocol[]>;
export type TableKind = keyof typeof TABLES;

const COUNTER_FILES = ['sockstat', 'sockstat6', 'snmp'] as const;

/**
 * A seq_file read returns at most one buffer page. A chunk shorter than a page minus one row ends the
 * table, and stopping there matters: the extra read that would return 0 walks the kernel's hash again.
 */
const SHORT_CHUNK = 4096 - 512;

/**
 * Reads one network namespace's socket tables and counters through files opened once via a process of the
 * namespace. The open files pin the namespace, so reads keep working when that process exits; close()
 * releases it (the sensor does when no container of the inventory uses the namespace any more).
 */
export class NetnsReader {
  private readonly fds = new Map<string, number>();
  private buf: Buffer;

  /** Opens /proc/<pid>/net/*; throws when the process is gone. Files the kernel lacks (IPv6 off) read as empty. */
  constructor(
    readonly procRoot: string,
    readonly pid: number,
    sharedBuffer?: Buffer,
  ) {
    this.buf = sharedBuffer ?? Buffer.allocUnsafe(1 << 16);
    const net = path.join(procRoot, String(pid), 'net');
    try {
      for (const name of [...TABLES.tcp, ...TABLES.udp, ...COUNTER_FILES]) {
        try {
          this.fds.set(name, openSync(path.join(net, name), 'r'));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || name === 'tcp' || name === 'sockstat') throw err;
        }
      }
    } catch (err) {
      this.close();
      throw err;
    }
  }

  readCounters(): NetCounters {
    return parseNetCounters(this.read('sockstat'), this.read('sockstat6'), this.read('snmp'), `/proc/${this.pid}/net/snmp`);
  }

  /** Both tables of a kind (tcp+tcp6 or udp+udp6), parsed. */
  readTables(kind: TableKind): RawSocket[] {
    const out: RawSocket[] = [];
    for (const protocol of TABLES[kind]) {
      if (!this.fds.has(protocol)) continue;
      out.push(...parseSocketTable(this.read(protocol), protocol, `/proc/${this.pid}/net/${protocol}`));
    }
    return out;
  }

  close(): void {
    for (const fd of this.fds.values()) {
      try {
        closeSync(fd);
      } catch {
        // Already closed; nothing left to release.
      }
    }
    this.fds.clear();
  }

  private read(name: string): string {
    const fd = this.fds.get(name);
    if (fd === undefined) return '';
    let len = 0;
    for (;;) {
      if (this.buf.length - len < 8192) {
        const bigger = Buffer.allocUnsafe(this.buf.length * 2);
        this.buf.copy(bigger, 0, 0, len);
        this.buf = bigger;
      }
      const n = readSync(fd, this.buf, len, this.buf.length - len, len);
      len += n;
      if (n < SHORT_CHUNK) break;
    }
    return this.buf.toString('latin1', 0, len);
  }
}
