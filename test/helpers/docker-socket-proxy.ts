import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * A unix-socket proxy in front of the real Docker socket that a test can cut: `cut()` drops every
 * connection and refuses new ones until `restore()`. The agent under test talks to `path`.
 */
export class DockerSocketProxy {
  readonly path: string;
  private server: net.Server | undefined;
  private readonly conns = new Set<net.Socket>();
  private readonly dir: string;

  constructor(private readonly target = '/var/run/docker.sock') {
    this.dir = mkdtempSync(path.join(tmpdir(), 'rw-proxy-'));
    this.path = path.join(this.dir, 'docker.sock');
  }

  async listen(): Promise<void> {
    rmSync(this.path, { force: true });
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.target);
      this.conns.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.conns.delete(client);
        this.conns.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.path, resolve));
  }

  /** Breaks every open connection and stops accepting new ones. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }

  async restore(): Promise<void> {
    await this.listen();
  }

  async close(): Promise<void> {
    await this.cut();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
