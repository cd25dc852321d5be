import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { ContainerInventory } from '../agent/pipeline/container-inventory.js';
import { toContainerInfo } from '../agent/sensors/docker/container-info.js';
import { CgroupStatsReader } from '../agent/sensors/resources/cgroup-stats-reader.js';
import { DockerStatsReader } from '../agent/sensors/resources/docker-stats-reader.js';
import { HostSampler } from '../agent/sensors/resources/host-sampler.js';
import { ResourceCollector } from '../agent/sensors/resources/resource-collector.js';
import { cpuMs, withBaseline, type BenchFigure, type Benchmark } from './bench.js';

const exec = promisify(execFile);
const CONTAINERS = 50;
const IMAGE = 'runwatch-test/busybox:1';
/** Scopes removal to this run's containers, so a concurrent run of the same benchmark keeps its own. */
const RUN_LABEL = `runwatch.bench.run=${process.pid}-${Date.now()}`;
const CLOCK_TICKS_PER_SEC = 100;

function removeBenchContainers(): void {
  const ids = execFileSync('docker', ['ps', '-aq', '--filter', `label=${RUN_LABEL}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  if (ids.length) execFileSync('docker', ['rm', '-f', ...ids], { stdio: 'ignore' });
}

async function startContainers(n: number): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const { stdout } = await exec('docker', [
        'run',
        '-d',
        '--label',
        'runwatch.test=bench',
        '--label',
        RUN_LABEL,
        '--network',
        'none',
        IMAGE,
        'sleep',
        '3600',
      ]);
      ids.push(stdout.trim());
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  return ids;
}

function procTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime, stime
  } catch {
    return undefined; // exited
  }
}

/**
 * The daemon side of a stats API call: dockerd, containerd and the shims of the benchmark's containers (each
 * container init's parent). Other engineers' shims come and go on this engine, so they are left out, and a
 * delta only counts processes alive at both ends.
 */
function daemonPids(containerPids: readonly number[]): number[] {
  const pids = new Set<number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (/^(dockerd|containerd)$/.test(readFileSync(`/proc/${pid}/comm`, 'latin1').trim())) pids.add(Number(pid));
    } catch {
      // exited while we looked
    }
  }
  for (const pid of containerPids) {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1');
    pids.add(Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]));
  }
  return [...pids];
}

function daemonTicks(pids: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    const t = procTicks(pid);
    if (t !== undefined) out.set(pid, t);
  }
  return out;
}

function daemonCpuMsSince(before: Map<number, number>, pids: readonly number[]): number {
  let ticks = 0;
  for (const [pid, t] of daemonTicks(pids)) if (before.has(pid)) ticks += t - before.get(pid)!;
  return (ticks / CLOCK_TICKS_PER_SEC) * 1000;
}

interface CycleCost {
  agentCpuMs: number;
  daemonCpuMs: number;
  wallMs: number;
}

/** Runs `rounds` cycles and returns the totals; every cycle must sample every container. */
async function measure(collector: ResourceCollector, rounds: number, daemon: readonly number[], into: CycleCost & { cycles: number }): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    const d0 = daemonTicks(daemon);
    const c0 = cpuMs();
    const w0 = performance.now();
    const samples = await collector.collect();
    into.wallMs += performance.now() - w0;
    into.agentCpuMs += cpuMs() - c0;
    into.daemonCpuMs += daemonCpuMsSince(d0, daemon);
    into.cycles++;
    if (samples.length !== CONTAINERS) throw new Error(`a cycle sampled ${samples.length} of ${CONTAINERS} containers (${collector.lastError ?? 'no error'})`);
  }
}

const perCycle = (c: CycleCost & { cycles: number }) => ({
  agentCpuMs: c.agentCpuMs / c.cycles,
  daemonCpuMs: c.daemonCpuMs / c.cycles,
  wallMs: c.wallMs / c.cycles,
});

/** Metrics collection cost per cycle for 50 containers: cgroup files against the Docker stats API, side by side. */
export const resourcesBenchmark: Benchmark = {
  name: 'resources',
  needsDocker: true,
  async run() {
    const onSignal = () => {
      removeBenchContainers();
      process.exit(130);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const ids = await startContainers(CONTAINERS);
      const docker = new Docker({ socketPath: '/var/run/docker.sock' });
      const inventory = new ContainerInventory();
      for (const id of ids) inventory.upsert(toContainerInfo(await docker.getContainer(id).inspect(), undefined));
      const daemon = daemonPids(inventory.list().map((c) => c.pid));

      const variants = {
        cgroup: { collector: new ResourceCollector({ inventory, cgroup: new CgroupStatsReader() }), rounds: 10 },
        oneShot: { collector: new ResourceCollector({ inventory, dockerApi: new DockerStatsReader({ docker, oneShot: true }) }), rounds: 2 },
        twoSample: { collector: new ResourceCollector({ inventory, dockerApi: new DockerStatsReader({ docker, oneShot: false }) }), rounds: 1 },
      };
      const totals = { cgroup: zero(), oneShot: zero(), twoSample: zero() };
      for (const v of Object.values(variants)) await v.collector.collect(); // warm-up: JIT, sockets, path cache
      // Interleaved so that load from anything else on the host spreads over both sides.
      for (let round = 0; round < 3; round++) {
        for (const [name, v] of Object.entries(variants) as [keyof typeof variants, (typeof variants)['cgroup']][])
          await measure(v.collector, v.rounds, daemon, totals[name]);
      }
      const cg = perCycle(totals.cgroup);
      const os1 = perCycle(totals.oneShot);
      const os2 = perCycle(totals.twoSample);

      const host = new HostSampler({ diskPath: '/var/lib/docker' });
      await host.prime();
      await host.sample(Date.now());
      const h0 = cpuMs();
      for (let i = 0; i < 5; i++) await host.sample(Date.now());
      const hostCpuMs = (cpuMs() - h0) / 5;

      const n = `${CONTAINERS} containers`;
      const cgTotal = { name: 'cgroup read (agent+daemon)', value: cg.agentCpuMs + cg.daemonCpuMs };
      const figures: BenchFigure[] = [
        {
          name: `resources: cgroup read, CPU ms/cycle (${n}, agent+daemon)`,
          value: cgTotal.value,
          unit: 'ms',
          note: `default (auto); agent ${fmt(cg.agentCpuMs)} + daemon ${fmt(cg.daemonCpuMs)}`,
        },
        { name: `resources: cgroup read, wall ms/cycle (${n})`, value: cg.wallMs, unit: 'ms' },
        withBaseline(
          {
            name: `resources: stats API one-shot, CPU ms/cycle (${n}, agent+daemon)`,
            value: os1.agentCpuMs + os1.daemonCpuMs,
            unit: 'ms',
            note: `agent ${fmt(os1.agentCpuMs)} + daemon ${fmt(os1.daemonCpuMs)}`,
          },
          cgTotal,
        ),
        withBaseline(
          { name: `resources: stats API one-shot, agent CPU ms/cycle (${n})`, value: os1.agentCpuMs, unit: 'ms' },
          { name: 'cgroup read (agent)', value: cg.agentCpuMs },
        ),
        withBaseline({ name: `resources: stats API one-shot, wall ms/cycle (${n})`, value: os1.wallMs, unit: 'ms' }, { name: 'cgroup read', value: cg.wallMs }),
        withBaseline(
          {
            name: `resources: stats API stream:false, CPU ms/cycle (${n}, agent+daemon)`,
            value: os2.agentCpuMs + os2.daemonCpuMs,
            unit: 'ms',
            note: `two samples per call; agent ${fmt(os2.agentCpuMs)} + daemon ${fmt(os2.daemonCpuMs)}`,
          },
          cgTotal,
        ),
        withBaseline(
          { name: `resources: stats API stream:false, wall ms/cycle (${n})`, value: os2.wallMs, unit: 'ms' },
          { name: 'cgroup read', value: cg.wallMs },
        ),
        {
          name: 'resources: host sample (systeminformation), CPU ms/cycle',
          value: hostCpuMs,
          unit: 'ms',
          note: 'agent process; df is a child process and not counted',
        },
      ];
      return figures;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      removeBenchContainers();
    }
  },
};

function zero(): CycleCost & { cycles: number } {
  return { agentCpuMs: 0, daemonCpuMs: 0, wallMs: 0, cycles: 0 };
}

function fmt(n: number): string {
  return Number(n.toPrecision(3)).toString();
}
