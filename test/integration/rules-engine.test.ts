import path from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { BUSYBOX_IMAGE, docker, dockerExec, removeContainer, runContainer, TEST_RUN_ID, TOOLS_IMAGE } from '../helpers/docker.js';
import { startTestAgent } from '../helpers/test-agent.js';

const RULES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/rules/integration');

/** Image policy and posture findings from real containers on the real engine, with the fixture rules. */
describe('rules engine: image policy and posture (real Docker)', () => {
  it('docker.sock mounted → posture.sensitive_mount (critical), with the profile that applied', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const id = await runContainer({
      image: TOOLS_IMAGE,
      flags: ['--user', '1000', '-v', '/var/run/docker.sock:/var/run/docker.sock:ro'],
      cmd: ['sleep', '300'],
    });
    const rec = await t.waitForRecord((r) => r.rule === 'posture.sensitive_mount' && r.container?.id === id);
    expect(rec).toMatchObject({
      kind: 'alert',
      severity: 'critical',
      profile: 'runwatch-test-tools',
      decidedBy: 'posture.allowMounts',
      allowHint: 'allowMounts: [/var/run/docker.sock]',
      details: { source: '/var/run/docker.sock', destination: '/var/run/docker.sock', readOnly: true },
      container: { id, image: TOOLS_IMAGE },
    });
    expect(rec.message).toMatch(/mounts host path \/var\/run\/docker\.sock at \/var\/run\/docker\.sock \(read-only\)/);
  });

  it('an image tagged under an unapproved registry → image.registry_not_approved and image.unprofiled', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const ref = `evil.example.net/${TEST_RUN_ID.toLowerCase()}:1`;
    await docker(['tag', BUSYBOX_IMAGE, ref]);
    const id = await runContainer({ image: ref, keep: true });
    onTestFinished(async () => {
      // The container holds the reference; it has to go first.
      await removeContainer(id);
      await docker(['rmi', ref]).catch(() => undefined);
    });
    const rec = await t.waitForRecord((r) => r.rule === 'image.registry_not_approved' && r.container?.id === id);
    expect(rec).toMatchObject({
      severity: 'high',
      decidedBy: 'ImagePolicy.registries',
      allowHint: '- evil.example.net',
      details: { registry: 'evil.example.net' },
      container: { image: ref },
    });
    await t.waitForRecord((r) => r.rule === 'image.unprofiled' && r.container?.id === id);
  });

  it('an unprofiled image → image.unprofiled; a profiled one does not get it', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const unprofiled = await runContainer({ image: BUSYBOX_IMAGE });
    const profiled = await runContainer({ image: TOOLS_IMAGE, cmd: ['sleep', '300'] });
    const rec = await t.waitForRecord((r) => r.rule === 'image.unprofiled' && r.container?.id === unprofiled);
    expect(rec).toMatchObject({ severity: 'low', decidedBy: 'ImagePolicy.unprofiled', allowHint: 'images: [docker.io/runwatch-test/busybox]' });
    expect(rec.profile).toBeUndefined();
    await t.waitForRecord((r) => r.rule === 'posture.root_user' && r.container?.id === profiled);
    expect(t.records.filter((r) => r.rule === 'image.unprofiled' && r.container?.id === profiled)).toEqual([]);
  });

  it('root user → posture.root_user once per container (create and start and restart are not repeated)', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['sleep', '300'] });
    const rec = await t.waitForRecord((r) => r.rule === 'posture.root_user' && r.container?.id === id);
    expect(rec).toMatchObject({
      severity: 'medium',
      profile: 'runwatch-test-tools',
      decidedBy: 'posture.allowRoot',
      allowHint: 'allowRoot: true',
      details: { user: 'root' },
    });
    await docker(['restart', '-t', '0', id]);
    // The restart's own audit record comes after its lifecycle events, so by then they were decided.
    await t.waitForRecord((r) => r.rule === 'audit.restart' && r.container?.id === id);
    expect(t.records.filter((r) => r.rule === 'posture.root_user' && r.container?.id === id)).toHaveLength(1);
  });

  it('a non-root user gives no posture.root_user', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const id = await runContainer({ image: TOOLS_IMAGE, flags: ['--user', '1000:1000'], cmd: ['sleep', '300'] });
    await t.waitForRecord((r) => r.rule === 'posture.writable_rootfs' && r.container?.id === id);
    expect(t.records.filter((r) => r.rule === 'posture.root_user' && r.container?.id === id)).toEqual([]);
  });

  it('a secret-looking variable → posture.secret_in_env naming it, never its value', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const value = `s3cr3t-${TEST_RUN_ID}`;
    const id = await runContainer({ image: TOOLS_IMAGE, flags: ['-e', `DB_PASSWORD=${value}`, '-e', 'DB_HOST=db'], cmd: ['sleep', '300'] });
    const rec = await t.waitForRecord((r) => r.rule === 'posture.secret_in_env' && r.container?.id === id);
    expect(rec).toMatchObject({ severity: 'medium', details: { names: 'DB_PASSWORD' }, allowHint: 'allowSecretEnv: [DB_PASSWORD]' });
    expect(rec.message).toMatch(/DB_PASSWORD/);
    expect(JSON.stringify(t.records)).not.toContain(value);
    const file = readFileSync(path.join(t.stateDir, 'records.jsonl'), 'utf8');
    expect(file).toContain('posture.secret_in_env');
    expect(file).not.toContain(value);
  });

  it('--cap-add SYS_ADMIN → posture.added_capabilities (high)', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const id = await runContainer({ image: TOOLS_IMAGE, flags: ['--cap-add', 'SYS_ADMIN', '--cap-add', 'NET_RAW'], cmd: ['sleep', '300'] });
    const rec = await t.waitForRecord((r) => r.rule === 'posture.added_capabilities' && r.container?.id === id);
    // NET_RAW is in Docker's default set: adding it changes nothing, so it is not reported.
    expect(rec).toMatchObject({ severity: 'high', details: { capabilities: 'SYS_ADMIN' }, allowHint: 'allowCapabilities: [SYS_ADMIN]' });
  });

  it('docker create --privileged → posture.privileged from the created container (it cannot start here)', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const id = await runContainer({ image: TOOLS_IMAGE, flags: ['--privileged'], cmd: ['sleep', '300'], createOnly: true });
    const rec = await t.waitForRecord((r) => r.rule === 'posture.privileged' && r.container?.id === id);
    expect(rec).toMatchObject({
      kind: 'alert',
      severity: 'critical',
      profile: 'runwatch-test-tools',
      decidedBy: 'posture.allowPrivileged',
      container: { id, image: TOOLS_IMAGE },
    });
  });

  it('host network → posture.host_namespace', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const id = await runContainer({ image: TOOLS_IMAGE, flags: ['--network', 'host'], cmd: ['sleep', '300'] });
    const rec = await t.waitForRecord((r) => r.rule === 'posture.host_namespace' && r.container?.id === id);
    expect(rec).toMatchObject({ severity: 'high', details: { namespaces: 'net' }, allowHint: 'allowHostNamespaces: [net]' });
  });

  it('a tag that runs another image than before → image.digest_changed, remembered in the state folder', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] } });
    const ref = `runwatch-test/retagged-${TEST_RUN_ID.toLowerCase()}:1`;
    const ids: string[] = [];
    onTestFinished(async () => {
      for (const id of ids) await removeContainer(id);
      await docker(['rmi', ref]).catch(() => undefined);
    });
    await docker(['tag', BUSYBOX_IMAGE, ref]);
    ids.push(await runContainer({ image: ref, keep: true }));
    await t.waitForRecord((r) => r.rule === 'image.unprofiled' && r.container?.id === ids[0]);
    const history = JSON.parse(readFileSync(path.join(t.stateDir, 'image-history.json'), 'utf8')) as { tags: Record<string, { imageId: string }> };
    const busyboxId = await docker(['image', 'inspect', '-f', '{{.Id}}', BUSYBOX_IMAGE]);
    expect(history.tags[`docker.io/${ref}`].imageId).toBe(busyboxId);

    await docker(['tag', TOOLS_IMAGE, ref]);
    ids.push(await runContainer({ image: ref, keep: true, cmd: ['sleep', '300'] }));
    const rec = await t.waitForRecord((r) => r.rule === 'image.digest_changed' && r.container?.id === ids[1]);
    const toolsId = await docker(['image', 'inspect', '-f', '{{.Id}}', TOOLS_IMAGE]);
    expect(rec).toMatchObject({ severity: 'medium', details: { previousImageId: busyboxId, imageId: toolsId } });
    expect(rec.message).toContain(`Tag docker.io/${ref} now runs image ${toolsId.slice(0, 19)}`);
    expect(t.records.filter((r) => r.rule === 'image.digest_changed')).toHaveLength(1);
  });

  it('activity of a profiled container through the file and network sensors: only what the profile does not allow alerts', async () => {
    const t = await startTestAgent({ rules: { paths: [RULES] }, sensors: { file: { enabled: true }, network: { enabled: true, intervalSeconds: 0.5 } } });
    const id = await runContainer({ image: TOOLS_IMAGE, cmd: ['sleep', '300'] });
    await t.waitForRecord((r) => r.rule === 'posture.root_user' && r.container?.id === id);
    await dockerExec(id, ['sh', '-c', 'echo ok > /tmp/allowed && echo no > /etc/runwatch-written']);
    const write = await t.waitForRecord((r) => r.rule === 'file.write_not_allowed' && r.container?.id === id);
    expect(write).toMatchObject({
      severity: 'medium',
      profile: 'runwatch-test-tools',
      decidedBy: 'files.write',
      allowHint: '- /etc/runwatch-written',
      file: { path: '/etc/runwatch-written' },
    });
    expect(t.records.filter((r) => r.rule === 'file.write_not_allowed' && r.file?.path.startsWith('/tmp/'))).toEqual([]);

    await dockerExec(id, ['nc', '-l', '-p', '8080'], ['-d']);
    await dockerExec(id, ['nc', '-l', '-p', '9999'], ['-d']);
    const listen = await t.waitForRecord((r) => r.rule === 'network.listen_not_allowed' && r.container?.id === id);
    expect(listen).toMatchObject({ severity: 'medium', decidedBy: 'network.listen', allowHint: '- tcp:9999', network: { direction: 'listen' } });
    expect(t.records.filter((r) => r.rule === 'network.listen_not_allowed' && r.allowHint === '- tcp:8080')).toEqual([]);
  });
});
