import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultConfig } from '../../../../agent/config/load.js';
import type { RunwatchEvent } from '../../../../agent/events/types.js';
import { silentLogger } from '../../../../agent/log.js';
import { ContainerInventory } from '../../../../agent/pipeline/container-inventory.js';
import { EventQueue } from '../../../../agent/pipeline/event-queue.js';
import { DockerSensor } from '../../../../agent/sensors/docker/docker-sensor.js';

/**
 * A daemon that misbehaves on purpose: its /events stream mixes garbage with real messages.
 * (The sensor's behaviour against the real engine is in test/integration/docker-sensor.test.ts.)
 */
function fakeDaemon(eventLines: string[]): { socket: string; server: http.Server } {
  const socket = path.join(mkdtempSync(path.join(tmpdir(), 'rw-fake-docker-')), 'docker.sock');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.endsWith('/_ping')) return void res.end('OK');
    if (url.pathname.endsWith('/containers/json')) return void res.end('[]');
    if (url.pathname.endsWith('/events')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      if (url.searchParams.has('until')) return void res.end();
      // Split a line across chunks too: the sensor must reassemble lines.
      for (const l of eventLines) {
        const half = Math.floor(l.length / 2);
        res.write(l.slice(0, half));
        res.write(l.slice(half) + '\n');
      }
      return;
    }
    if (url.pathname.includes('/images/')) return void res.end(JSON.stringify({ RepoDigests: [], Created: '2020-01-01T00:00:00Z', Config: {} }));
    res.statusCode = 404;
    res.end('{"message":"no such container"}');
  });
  server.listen(socket);
  return { socket, server };
}

let sensor: DockerSensor | undefined;
let server: http.Server | undefined;
afterEach(async () => {
  await sensor?.stop();
  server?.closeAllConnections();
  server?.close();
});

describe('DockerSensor against a misbehaving daemon', () => {
  it('counts malformed events, never crashes, and still handles the good ones', async () => {
    const good = { Type: 'image', Action: 'tag', Actor: { ID: 'sha256:1', Attributes: { name: 'x/y:1' } }, time: 1, timeNano: Date.now() * 1e6 };
    const lines = ['{not json', JSON.stringify({ Type: 'container' }), '[]', JSON.stringify(good), '"str"'];
    const daemon = fakeDaemon(lines);
    server = daemon.server;
    const queue = new EventQueue(100);
    sensor = new DockerSensor({ socketPath: daemon.socket, waitForDaemon: false, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 100 });
    await sensor.start({
      config: defaultConfig({ env: {} }),
      queue,
      inventory: new ContainerInventory(),
      log: silentLogger,
      signal: new AbortController().signal,
    });
    const deadline = Date.now() + 5000;
    const got: RunwatchEvent[] = [];
    while (got.length === 0 && Date.now() < deadline) {
      got.push(...queue.take(10));
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ kind: 'docker_action', scope: 'image', action: 'tag', image: 'x/y:1' });
    expect(sensor.health().details?.malformed).toBe(4);
  });

  it('waits for the daemon when asked to, and fails with a clear error when not', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rw-wait-'));
    const socket = path.join(dir, 'docker.sock');
    const ctx = {
      config: defaultConfig({ env: {} }),
      queue: new EventQueue(10),
      inventory: new ContainerInventory(),
      log: silentLogger,
      signal: new AbortController().signal,
    };
    await expect(
      new DockerSensor({ socketPath: socket, waitForDaemon: false, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 100 }).start(ctx),
    ).rejects.toThrow(/cannot reach the Docker daemon at .*docker\.sock/);
    sensor = new DockerSensor({ socketPath: socket, waitForDaemon: true, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 100 });
    const started = sensor.start(ctx);
    await new Promise((r) => setTimeout(r, 300));
    expect(sensor.health().state).toBe('starting');
    server = http.createServer((req, res) => res.end(req.url?.includes('containers') ? '[]' : 'OK'));
    server.listen(socket);
    await started;
    expect(sensor.health().state).toBe('running');
  });
});
