import { describe, expect, it } from 'vitest';
import { dockerExec, runContainer } from '../helpers/docker.js';
import { startTestAgent } from '../helpers/test-agent.js';

describe('admin audit trail (real Docker)', () => {
  it('records docker exec with its command and container context', async () => {
    const t = await startTestAgent();
    const id = await runContainer({ cmd: ['sleep', '300'] });
    await dockerExec(id, ['ls', '/etc']);
    const rec = await t.waitForRecord((r) => r.rule === 'audit.exec' && r.docker?.action === 'exec_start' && r.container?.id === id);
    expect(rec.kind).toBe('audit');
    expect(rec.docker?.command).toBe('ls /etc');
    expect(rec.container?.image).toBe('runwatch-test/busybox:1');
    expect(rec.container?.imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
  });
});
