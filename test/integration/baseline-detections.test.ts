import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BUSYBOX_IMAGE, docker, dockerExec, runContainer } from '../helpers/docker.js';
import { startTestAgent, type TestAgent } from '../helpers/test-agent.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// A profile that allows busybox everything, so what fires is the baseline, not the allowlist.
const RULES = [path.join(root, 'test/fixtures/rules/baseline'), path.join(root, 'rules/baseline.yaml')];

/**
 * Runs a script in the container; a non-zero exit is fine (insmod without the capability still ran).
 * Commands inside go by absolute path: busybox sh runs applets named bare in-process, without an exec.
 */
async function run(id: string, script: string): Promise<void> {
  await dockerExec(id, ['sh', '-c', `${script}; true`]);
}

async function expectDetection(t: TestAgent, id: string, rule: string, mitre: string, check: (r: { message: string }) => boolean = () => true): Promise<void> {
  const rec = await t.waitForRecord((r) => r.rule === rule && r.container?.id === id && check(r), 15_000);
  expect(rec).toMatchObject({ kind: 'alert', rule, mitre, profile: 'busybox-open', container: { id, image: BUSYBOX_IMAGE } });
}

describe('baseline detections fired by real actions in a real container', () => {
  it('process detections: server shell, reverse shell, nc -e, drift, packages, miner, credentials, base64, logs, kernel, namespaces, metadata', async () => {
    const t = await startTestAgent({ sensors: { process: { enabled: true }, file: { enabled: true } }, rules: { paths: RULES } });
    const id = await runContainer({ image: BUSYBOX_IMAGE, cmd: ['sleep', '600'] });
    await t.waitForRecord((r) => r.rule === 'posture.writable_rootfs' && r.container?.id === id).catch(() => undefined);

    // A CGI script run by busybox httpd: a shell whose parent is a web server (loopback only).
    await run(id, "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nid\\n' > /www/cgi-bin/x && chmod +x /www/cgi-bin/x");
    await run(id, '/bin/httpd -p 127.0.0.1:8080 -h /www && sleep 0.3 && /bin/wget -q -O /dev/null http://127.0.0.1:8080/cgi-bin/x');
    await expectDetection(t, id, 'baseline.shell_from_server', 'T1059.004', (r) => r.message.includes('parent httpd'));

    // nc -e wires sh to a loopback socket: the nc line itself and the shell with a socket as stdio.
    // The shell lives a moment, as a real one would: one that exits within microseconds can be gone before its
    // stdio is read (an unresolved exec), and then nothing says it had a socket.
    await run(id, "(/bin/nc -l -p 4444 -e /bin/sh &) ; sleep 0.3; echo 'sleep 1; exit' | /bin/nc 127.0.0.1 4444");
    await expectDetection(t, id, 'baseline.netcat_exec', 'T1059');
    await expectDetection(t, id, 'baseline.reverse_shell', 'T1059.004');

    await run(id, 'cp /bin/busybox /tmp/bb && /tmp/bb sleep 1');
    await expectDetection(t, id, 'baseline.drift_exec', 'T1105', (r) => r.message.includes('/tmp/bb'));
    await expectDetection(t, id, 'baseline.exec_from_temp', 'T1059', (r) => r.message.includes('/tmp/bb'));

    await run(id, '/bin/dpkg -i /tmp/none.deb');
    await expectDetection(t, id, 'baseline.package_manager', 'T1105');
    await dockerExec(id, ['sh', '-c', ': stratum+tcp://127.0.0.1:3333; sleep 1']);
    await expectDetection(t, id, 'baseline.crypto_miner', 'T1496');
    await run(id, '/bin/find / -xdev -name id_rsa');
    await expectDetection(t, id, 'baseline.credential_search', 'T1552.001');
    await dockerExec(id, ['sh', '-c', 'echo dHJ1ZQo= | /bin/base64 -d | /bin/sh']);
    await expectDetection(t, id, 'baseline.base64_to_shell', 'T1140');
    await run(id, '/bin/rm -f /root/.ash_history');
    await expectDetection(t, id, 'baseline.clear_logs', 'T1070');
    await run(id, '/bin/insmod /tmp/none.ko');
    await expectDetection(t, id, 'baseline.kernel_module', 'T1547.006');
    await run(id, '/bin/unshare -U /bin/true');
    await expectDetection(t, id, 'baseline.namespace_tool', 'T1611');
    // Only named in arguments: nothing ever connects to it. The shell stays a moment, so its arguments can be read
    // (a shell that exits at once may be gone first, and an unresolved exec has no arguments to look at).
    await dockerExec(id, ['sh', '-c', ': http://169.254.169.254/latest; sleep 1']);
    await expectDetection(t, id, 'baseline.metadata_in_args', 'T1552.005');

    // An allowed, ordinary command raises no detection of its own.
    await dockerExec(id, ['sh', '-c', '/bin/ls /etc >/dev/null']);
    await t.waitForRecord((r) => r.rule === 'audit.exec' && r.container?.id === id && r.message.includes('ls /etc'));
    expect(t.records.filter((r) => r.rule.startsWith('baseline.') && (r.process?.args ?? []).join(' ').includes('ls /etc'))).toEqual([]);
  });

  it('file detections: system folders, user database, cron, start-up files, authorized_keys, setuid, links', async () => {
    const t = await startTestAgent({ sensors: { process: { enabled: true }, file: { enabled: true } }, rules: { paths: RULES } });
    const id = await runContainer({ image: BUSYBOX_IMAGE, cmd: ['sleep', '600'] });
    await t.waitForRecord((r) => r.rule === 'posture.writable_rootfs' && r.container?.id === id).catch(() => undefined);
    await run(id, 'touch /usr/bin/evil');
    await expectDetection(t, id, 'baseline.write_binary_dir', 'T1554');
    await run(id, 'touch /etc/evil.conf');
    await expectDetection(t, id, 'baseline.write_etc_or_root', 'T1543');
    await run(id, "echo 'x:x:0:0::/root:/bin/sh' >> /etc/passwd");
    await expectDetection(t, id, 'baseline.user_management', 'T1136.001');
    await run(id, 'mkdir -p /etc/cron.d && echo "* * * * * root id" > /etc/cron.d/job');
    await expectDetection(t, id, 'baseline.write_cron', 'T1053.003');
    await run(id, 'echo id >> /root/.profile');
    await expectDetection(t, id, 'baseline.write_shell_startup', 'T1546.004');
    await run(id, 'mkdir -p /root/.ssh && echo ssh-ed25519 AAAA > /root/.ssh/authorized_keys');
    await expectDetection(t, id, 'baseline.write_ssh_keys', 'T1098.004');
    await run(id, 'mkdir -p /var/x && cp /bin/busybox /var/x/sb && /bin/chmod u+s /var/x/sb');
    await expectDetection(t, id, 'baseline.setid_bit', 'T1548.001', (r) => r.message.includes('/var/x/sb'));
    await run(id, '/bin/ln -s /etc/shadow /var/x/sl');
    await expectDetection(t, id, 'baseline.sensitive_link', 'T1003.008', (r) => r.message.includes('/var/x/sl'));
  });

  it('docker exec of a bare shell → baseline.docker_exec_shell; sh -c does not', async () => {
    const t = await startTestAgent({ rules: { paths: RULES } });
    const id = await runContainer({ image: BUSYBOX_IMAGE, cmd: ['sleep', '600'] });
    await docker(['exec', id, 'sh', '-c', 'true']);
    await docker(['exec', id, 'sh']);
    const rec = await t.waitForRecord((r) => r.rule === 'baseline.docker_exec_shell' && r.container?.id === id, 15_000);
    expect(rec).toMatchObject({ mitre: 'T1609', severity: 'medium', docker: { action: 'exec_start', command: 'sh' } });
    expect(t.records.filter((r) => r.rule === 'baseline.docker_exec_shell' && r.container?.id === id)).toHaveLength(1);
  });
});
