import { readFileSync } from 'node:fs';
import path from 'node:path';
import { compileRuleset } from '../agent/engine/rule-compiler.js';
import { parseRuleText } from '../agent/engine/rule-loader.js';
import { RulesDecider } from '../agent/engine/rules-decider.js';
import type { ContainerInfo, FileChangeEvent, NetSocketEvent, ProcessExecEvent } from '../agent/events/types.js';
import { medianBatchRate, refreshStrings, withBaseline, type Benchmark } from './bench.js';

// `npm run bench` runs from the repository root, where rules/ is.
const root = process.cwd();
/** Batches (one pass over the workload each) timed, after the untimed warm-up ones. */
const PASSES = 150;
const WARMUP_PASSES = 300;
const DEFAULTS = { cpuHighPercent: 90, memoryHighPercent: 90 };

const info: ContainerInfo = {
  id: 'f'.repeat(64),
  name: 'web',
  image: 'nginx:1.27',
  imageId: `sha256:${'c'.repeat(64)}`,
  imageRepoDigests: [],
  created: '2025-01-01T00:00:00Z',
  running: true,
  pid: 1000,
  user: '',
  privileged: false,
  capAdd: [],
  capDrop: [],
  hostNamespaces: { pid: false, net: false, ipc: false, uts: false, userns: false },
  networkMode: 'bridge',
  mounts: [],
  readOnlyRootfs: false,
  envNames: [],
  memoryLimit: 0,
  cpuLimit: 0,
};

type Ev = ProcessExecEvent | FileChangeEvent | NetSocketEvent;

/** What an nginx container does all day (execs, cache writes, connections), plus a few bad events. */
function workload(): Ev[] {
  const proc = (exe: string, args: string[], parent = '/usr/sbin/nginx', extra: Partial<ProcessExecEvent> = {}): ProcessExecEvent => ({
    kind: 'process_exec',
    ts: 0,
    containerId: info.id,
    pid: 10,
    ppid: 1,
    exe,
    args,
    argv0: args[0],
    comm: path.basename(exe).slice(0, 15),
    uid: 101,
    ancestors: [{ pid: 1, exe: parent, comm: path.basename(parent) }],
    resolved: true,
    ...extra,
  });
  const file = (p: string, op: FileChangeEvent['op'] = 'modify'): FileChangeEvent => ({
    kind: 'file_change',
    ts: 0,
    containerId: info.id,
    path: p,
    op,
    mode: 0o100644,
  });
  const out: Ev[] = [];
  for (let i = 0; i < 100; i++) {
    out.push(proc('/usr/sbin/nginx', ['nginx', '-g', 'daemon off;'], '/usr/bin/dash'));
    out.push(proc('/usr/bin/dash', ['/bin/sh', '/docker-entrypoint.sh', 'nginx', '-g', 'daemon off;'], '/usr/bin/containerd-shim'));
    out.push(proc('/usr/bin/find', ['find', '/docker-entrypoint.d/', '-follow', '-type', 'f', '-print'], '/usr/bin/dash'));
    out.push(file(`/var/cache/nginx/proxy_temp/${i % 10}/00/00000000${i}`, 'create'));
    out.push(file('/var/log/nginx/access.log'));
    out.push(file('/etc/nginx/conf.d/default.conf'));
    out.push({ kind: 'net_socket', ts: 0, containerId: info.id, protocol: 'tcp', direction: 'listen', local: '0.0.0.0:80' });
  }
  // 1% bad: a shell from nginx, a write to /etc/passwd, a connection to the metadata service.
  out.push(proc('/usr/bin/dash', ['sh', '-c', 'id'], '/usr/sbin/nginx'));
  out.push(file('/etc/passwd'));
  out.push({ kind: 'net_socket', ts: 0, containerId: info.id, protocol: 'tcp', direction: 'connect', local: '172.17.0.2:40000', remote: '169.254.169.254:80' });
  return out;
}

function load(files: string[]): RulesDecider {
  const docs = files.flatMap((f) => parseRuleText(readFileSync(path.join(root, f), 'utf8'), f).docs);
  const { ruleset, errors } = compileRuleset(docs, { defaults: DEFAULTS });
  if (!ruleset) throw new Error(errors.map((e) => e.format()).join('\n'));
  return new RulesDecider(ruleset);
}

/** Makes every exec's last argument and every written path unique (in place, keeping the events' shapes): nothing repeats, the memos never help. */
function makeDistinct(events: readonly Ev[], batch: number): readonly Ev[] {
  events.forEach((ev, i) => {
    const tag = `.${batch}-${i}`;
    if (ev.kind === 'process_exec') ev.args[ev.args.length - 1] = ev.args[ev.args.length - 1].replace(/\.\d+-\d+$/, '') + tag;
    else if (ev.kind === 'file_change') ev.path = ev.path.replace(/\.\d+-\d+$/, '') + tag;
  });
  return events;
}

/**
 * Decisions per second with rules/baseline.yaml and the shipped nginx profile evaluated together, against
 * the nginx profile alone measured in the same run (the cost the baseline adds); and the same when no
 * event ever repeats, the worst case for the engine's memos.
 */
export const detectionsBenchmark: Benchmark = {
  name: 'detections',
  async run() {
    const events = workload();
    // Best of three runs: each run's median is steady, but runs differ with what the JIT made of the code.
    const rate = (d: RulesDecider, makeBatch: (b: number) => readonly Ev[]) => {
      for (let b = 0; b < WARMUP_PASSES; b++) for (const ev of makeBatch(b)) d.decide(ev, { container: info });
      let best = 0;
      for (let run = 0; run < 3; run++) {
        const first = WARMUP_PASSES + run * PASSES;
        const decideAll = (batch: readonly Ev[]) => {
          for (let i = 0; i < batch.length; i++) d.decide(batch[i], { container: info });
        };
        best = Math.max(
          best,
          medianBatchRate(PASSES, (b) => makeBatch(first + b), decideAll),
        );
      }
      return best;
    };
    const both = load(['rules/nginx.yaml', 'rules/baseline.yaml']);
    const profileOnly = load(['rules/nginx.yaml']);
    const detected = events.filter((ev) => both.decide(ev, { container: info }).some((f) => f.rule.startsWith('baseline.'))).length;
    if (detected !== 3) throw new Error(`expected the 3 bad events to be detected, got ${detected}`);
    const repeating = () => {
      for (const ev of events) refreshStrings(ev);
      return events;
    };
    const withBaselineRate = rate(both, repeating);
    const aloneRate = rate(profileOnly, repeating);
    // Last: this changes the workload's events.
    const unique = (b: number) => makeDistinct(repeating(), b);
    const uniqueRate = rate(load(['rules/nginx.yaml', 'rules/baseline.yaml']), unique);
    const uniqueAloneRate = rate(load(['rules/nginx.yaml']), unique);
    const name = `baseline (${both.ruleset.detections.size}) + nginx profile`;
    return [
      withBaseline(
        {
          name: `detections: decisions/s, ${name}`,
          value: withBaselineRate,
          unit: 'decisions/s',
          note: 'one core, fresh events, best of 3 runs of median batches; target ≥ 1,000,000',
        },
        { name: 'nginx profile alone', value: aloneRate },
      ),
      withBaseline(
        { name: `detections: decisions/s, ${name}, no event repeats`, value: uniqueRate, unit: 'decisions/s', note: 'worst case: every verdict computed' },
        { name: 'nginx profile alone', value: uniqueAloneRate },
      ),
    ];
  },
};
