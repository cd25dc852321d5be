import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { parse } from 'yaml';
import { learnSession, type LearnResult } from '../../agent/cli/learn-command.js';
import { parseConfig, type Config } from '../../agent/config/load.js';
import { ACTIVITY_RULES, type ProfileLearner } from '../../agent/engine/learner.js';
import { compileRuleset } from '../../agent/engine/rule-compiler.js';
import { parseRuleText } from '../../agent/engine/rule-loader.js';
import type { RunwatchEvent } from '../../agent/events/types.js';
import { createLogger, silentLogger } from '../../agent/log.js';
import { Agent } from '../../agent/main.js';
import { docker, dockerExec, runContainer, TEST_RUN_ID, TOOLS_IMAGE } from '../helpers/docker.js';
import { MemorySink, waitFor } from '../helpers/test-agent.js';

/**
 * `runwatch learn` end to end in this process: the real agent with the process, file and network sensors
 * learns a tools container, then the learned profile, loaded as rules by a fresh agent, judges a second
 * container doing the same (no allowlist alert) and then something new (process.not_allowed).
 */

const log = process.env.RUNWATCH_TEST_LOG ? createLogger({ level: 'debug' }) : silentLogger;
/**
 * The tools image under a tag of this run's own: other test runs on this engine start tools containers
 * too, and a learner learns every container of its image.
 */
const IMAGE = `runwatch-test/learn-${TEST_RUN_ID}:1`;
beforeAll(() => docker(['tag', TOOLS_IMAGE, IMAGE]));
afterAll(() => docker(['rmi', IMAGE]).catch(() => undefined));
const ITEMS = ['item1', 'item2', 'item3', 'item4', 'item5', 'item6'];

/** The behaviour learned and replayed: real binaries, busybox applets, writes, and a listener on the container's own loopback. */
async function behave(id: string): Promise<void> {
  await dockerExec(id, ['id']);
  await dockerExec(id, ['whoami']);
  await dockerExec(id, ['head', '-n1', '/etc/passwd']);
  await dockerExec(id, ['mkdir', '-p', '/var/cache/app', '/data']);
  await dockerExec(id, ['touch', ...ITEMS.map((i) => `/var/cache/app/${i}`), '/data/out.txt']);
  await dockerExec(id, ['nc', '-l', '-p', '8080'], ['-d']);
}

const EXPECTED = {
  process: [{ exe: '/bin/busybox', names: ['mkdir', 'nc', 'touch'] }, '/usr/bin/head', '/usr/bin/id', '/usr/bin/sleep', '/usr/bin/whoami'],
  write: ['/data', '/data/out.txt', '/var', '/var/cache', '/var/cache/app', '/var/cache/app/**'],
  listen: ['tcp:8080'],
  connect: [],
};

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rw-learn-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function agentConfig(dir: string, rulesDir: string): Config {
  const raw = {
    stateDir: dir,
    outputs: { stdout: { enabled: false }, jsonl: { path: path.join(dir, 'records.jsonl') } },
    pipeline: { groupWindowSeconds: 0 },
    rules: { watch: false, paths: [rulesDir] },
    sensors: { network: { intervalSeconds: 0.5 } },
    metrics: { enabled: false },
  };
  return parseConfig(JSON.stringify(raw), path.join(dir, 'config.yaml'));
}

/** What the learner has so far, in profile terms, for waiting and for failure messages. */
function sofar(learner: ProfileLearner): string {
  const l = learner.lists();
  return JSON.stringify({ process: l.process.map((e) => e.value), write: l.write.map((e) => e.value), listen: l.listen.map((e) => e.value) });
}

/** Learns one tools container doing `behave`, through the real agent, until everything expected was seen. */
async function learnOnce(): Promise<{ result: LearnResult; id: string; sink: MemorySink }> {
  const dir = tempDir();
  const rulesDir = path.join(dir, 'rules');
  mkdirSync(rulesDir);
  const sink = new MemorySink();
  const controller = new AbortController();
  let learner!: ProfileLearner;
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  const session = learnSession({
    config: agentConfig(dir, rulesDir),
    log,
    signal: controller.signal,
    extraSinks: [sink],
    images: [IMAGE],
    name: 'tools-learned',
    onLearner: (l) => (learner = l),
    onStarted: () => started(),
  });
  onTestFinished(() => controller.abort());
  await Promise.race([running, session]);
  const id = await runContainer({ image: IMAGE, cmd: ['sleep', 'infinity'] });
  await behave(id);
  // Every entry, not just their number: a busybox applet adds a name to an entry, not an entry.
  const want = JSON.stringify({ process: EXPECTED.process, write: EXPECTED.write, listen: EXPECTED.listen });
  await waitFor(
    () => sofar(learner) === want,
    30_000,
    () => `the whole behaviour learned; so far ${sofar(learner)}`,
  );
  controller.abort();
  return { result: await session, id, sink };
}

/** The coverage comment's times are the only lines two runs may differ in. */
const withoutTimes = (text: string) => text.replace(/^# (Observed|Stopped growing|Still growing):.*\n/gm, '');

describe('runwatch learn (real containers)', () => {
  let first: LearnResult | undefined;

  it('learns exactly what a container did, mutes only its allowlist findings, and the profile it writes catches something new', async () => {
    const { result, id, sink } = await learnOnce();
    first = result;
    const doc = parse(result.text) as {
      name: string;
      images: string[];
      process: { allow: unknown[] };
      files: { write: string[] };
      network: { listen: string[]; connect: string[] };
    };
    expect(doc).toMatchObject({ name: 'tools-learned', images: [IMAGE] });
    expect({ process: doc.process.allow, write: doc.files.write, listen: doc.network.listen, connect: doc.network.connect }).toEqual(EXPECTED);
    expect(result.text).toMatch(/^# Coverage: 1 container, \d+ events, 12 entries \(5 process, 6 files, 1 listen, 0 connect\)\.$/m);
    expect(result.text).toContain('    - /var/cache/app/** # 6 (6 paths)\n');
    expect(result.text).not.toContain('Not learned');

    // The learned profile validates with the engine's own loader and compiler.
    const file = path.join(tempDir(), 'tools.yaml');
    const parsed = parseRuleText(result.text, file);
    expect(parsed.errors.map((e) => e.format())).toEqual([]);
    expect(compileRuleset(parsed.docs, { defaults: { cpuHighPercent: 90, memoryHighPercent: 90 } }).errors).toEqual([]);

    // While learning, its allowlist findings were muted; image policy and posture findings still went out.
    const own = sink.records.filter((r) => r.container?.id === id);
    expect(own.map((r) => r.rule)).toEqual(expect.arrayContaining(['image.unprofiled', 'posture.root_user']));
    expect(own.filter((r) => ACTIVITY_RULES.has(r.rule))).toEqual([]);

    // Replay: a fresh agent with the learned profile as its rules watches a fresh container do the same, then run stat.
    const dir = tempDir();
    const rulesDir = path.join(dir, 'rules');
    mkdirSync(rulesDir);
    writeFileSync(path.join(rulesDir, 'tools.yaml'), result.text);
    const replaySink = new MemorySink();
    const seen: RunwatchEvent[] = [];
    const agent = new Agent({ config: agentConfig(dir, rulesDir), log, extraSinks: [replaySink], onEvent: (ev) => seen.push(ev) });
    onTestFinished(() => agent.stop());
    await agent.start();
    const replay = await runContainer({ image: IMAGE, cmd: ['sleep', 'infinity'] });
    await behave(replay);
    const mine = () => seen.filter((e) => e.containerId === replay);
    await waitFor(
      () => {
        const evs = mine();
        return (
          evs.some((e) => e.kind === 'net_socket' && e.direction === 'listen') &&
          evs.some((e) => e.kind === 'file_change' && e.path === '/data/out.txt') &&
          evs.some((e) => e.kind === 'process_exec' && e.args[0] === 'nc')
        );
      },
      30_000,
      () =>
        `the replayed behaviour; seen ${mine()
          .map((e) => e.kind)
          .join(', ')}`,
    );
    expect(replaySink.records.filter((r) => r.container?.id === replay && ACTIVITY_RULES.has(r.rule))).toEqual([]);
    await dockerExec(replay, ['stat', '/']);
    const alert = await waitFor(
      () => replaySink.records.find((r) => r.rule === 'process.not_allowed' && r.container?.id === replay),
      15_000,
      () => `process.not_allowed; got ${replaySink.records.map((r) => r.rule).join(', ')}`,
    );
    expect(alert).toMatchObject({ profile: 'tools-learned', decidedBy: 'process.allow', process: { exe: '/usr/bin/stat' }, allowHint: '- /usr/bin/stat' });
    await agent.stop();
    expect(replaySink.records.filter((r) => r.container?.id === replay && ACTIVITY_RULES.has(r.rule)).map((r) => [r.rule, r.process?.exe])).toEqual([
      ['process.not_allowed', '/usr/bin/stat'],
    ]);
  });

  it('writes a byte-identical profile when it learns the same behaviour again, apart from the coverage times', async () => {
    const earlier = first ?? (await learnOnce()).result;
    const { result } = await learnOnce();
    expect(withoutTimes(result.text)).toBe(withoutTimes(earlier.text));
  });

  it('sees containers that were already running when learning began', async () => {
    const id = await runContainer({ image: IMAGE, cmd: ['sh', '-c', 'mkdir -p /srv/early && touch /srv/early/ready && exec sleep infinity'] });
    await dockerExec(id, ['sh', '-c', 'while [ ! -f /srv/early/ready ]; do sleep 0.1; done']);
    const dir = tempDir();
    mkdirSync(path.join(dir, 'rules'));
    const controller = new AbortController();
    let learner!: ProfileLearner;
    const session = learnSession({
      config: agentConfig(dir, path.join(dir, 'rules')),
      log,
      signal: controller.signal,
      images: [IMAGE],
      name: 'early',
      onLearner: (l) => (learner = l),
    });
    onTestFinished(() => controller.abort());
    await waitFor(
      () => learner?.lists().write.some((e) => e.value === '/srv/early/ready'),
      30_000,
      () => `the write made before learning began; so far ${learner ? sofar(learner) : 'not started'}`,
    );
    controller.abort();
    const result = await session;
    expect(parse(result.text).files.write).toEqual(['/srv', '/srv/early', '/srv/early/ready']);
  });
});
