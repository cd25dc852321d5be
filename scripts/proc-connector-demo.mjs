#!/usr/bin/env node
/* global process, console, setTimeout */
// Manual check of the proc connector addon: prints events as JSON lines.
//   node scripts/proc-connector-demo.mjs [seconds] [--exec-only] [--no-realtime]
// Needs root (CAP_NET_ADMIN), host network and pid namespaces, and a built
// addon (npx node-gyp rebuild).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addonPath = path.join(root, 'build/Release/proc_connector.node');
if (!existsSync(addonPath)) {
  console.error(`addon not built: ${addonPath} (run: npx node-gyp rebuild)`);
  process.exit(2);
}
const { ProcConnector } = createRequire(import.meta.url)(addonPath);

const args = process.argv.slice(2);
const seconds = Number(args.find((a) => /^\d+(\.\d+)?$/.test(a)) ?? 10);
const execOnly = args.includes('--exec-only');
const realtime = !args.includes('--no-realtime');

const pc = new ProcConnector({ realtime }, (batch) => {
  for (const ev of batch) {
    if (execOnly && ev.type !== 'exec') continue;
    process.stdout.write(JSON.stringify(ev) + '\n');
  }
});
pc.start();
console.error(`listening for ${seconds}s`, pc.stats());
const done = () => {
  pc.stop();
  console.error('stats', pc.stats());
};
setTimeout(done, seconds * 1000);
process.once('SIGINT', done);
