import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { dockerExec, runContainer, TOOLS_IMAGE } from '../helpers/docker.js';
import type { RunwatchRecord } from '../../agent/events/types.js';
import { startTestAgent, waitFor } from '../helpers/test-agent.js';

const RULES = path.resolve('test/fixtures/rules/process');
const STORM = 1000;

interface ProcessHealth {
  details: { containerExecs: number; unresolved: number; kernelLost: number; queueDrops: number };
}

describe('unresolved execs (real kernel events, a real container)', () => {
  it('reports an exec whose executable could not be read with what is known: process.unresolved, pid, comm, parent', async () => {
    // The per-CPU SCHED_FIFO readers read even static busybox before it exits; one reader at normal priority (an
    // agent without CAP_SYS_NICE that turned them off) does not, which is how such execs still happen.
    const t = await startTestAgent({
      rules: { paths: [RULES] },
      sensors: { process: { enabled: true, realtime: false, perCpuReaders: false } },
    });
    const health = () => (t.agent.health() as { sensors: { process: ProcessHealth } }).sensors.process.details;
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['/usr/bin/sleep', '300'] });
    // Static busybox running its `true` applet exits within microseconds: often before /proc/<pid>/exe is read.
    // Some exit before even their task name can be read (the zombie was reaped): those are reported with pid and parent only.
    const named = (r: RunwatchRecord) => r.rule === 'process.unresolved' && r.container?.id === id && r.process?.comm === 'busybox';
    for (let storm = 0; storm < 3 && !t.records.some(named); storm++) {
      const before = health();
      await dockerExec(id, ['/bin/sh', '-c', `i=0; while [ $i -lt ${STORM} ]; do /bin/busybox true; i=$((i+1)); done`]);
      await waitFor(
        () => {
          const h = health();
          return h.containerExecs + h.kernelLost + h.queueDrops - (before.containerExecs + before.kernelLost + before.queueDrops) >= STORM;
        },
        30_000,
        () => `storm execs accounted: ${JSON.stringify(health())}`,
      );
      if (health().unresolved > 0)
        await waitFor(
          () => t.records.some((r) => r.rule === 'process.unresolved'),
          10_000,
          () => 'a process.unresolved record',
        );
    }
    expect(health().unresolved, 'no exec of the storms was unresolved: nothing to report').toBeGreaterThan(0);
    // The profile allows busybox only as sh, cp and chmod, and no program named "busybox": each unresolved exec is reported.
    const rec = await t.waitForRecord(named, 15_000);
    expect(rec.process).toMatchObject({ exe: '', comm: 'busybox', resolved: false });
    expect(rec.process?.pid).toBeGreaterThan(0);
    expect(rec.process?.ancestors[0]).toMatchObject({ exe: '/bin/busybox', comm: 'sh' });
    expect(rec.message).toContain('named "busybox"');
    expect(rec.profile).toBe('tools-process-test');
    // The resolved ones are ordinary allowlist findings.
    expect(t.records.some((r) => r.rule === 'process.not_allowed' && r.container?.id === id && r.process?.exe === '/bin/busybox')).toBe(true);
  });
});
