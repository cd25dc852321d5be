import type { RunwatchRecord } from '../../../../agent/events/types.js';

/** Records as the pipeline builds them, for sink tests. */
export function alertRecord(i = 0, over: Partial<RunwatchRecord> = {}): RunwatchRecord {
  return {
    time: new Date(1_700_000_000_000 + i * 1000).toISOString(),
    kind: 'alert',
    host: 'node-1',
    rule: 'Unexpected Process',
    severity: 'high',
    message: `Detect /usr/bin/nc started in web (${i})`,
    container: { id: 'c'.repeat(64), name: 'web', image: 'acr.example.io/web:1', imageId: `sha256:${'d'.repeat(64)}`, labels: { 'com.docker.compose.service': 'web', team: 'a' } },
    profile: 'acme-web',
    process: { pid: 4242, ppid: 1, exe: '/usr/bin/nc', args: ['nc', '-l', '-p', '4444'], uid: 0, user: 'root', ancestors: [{ pid: 1, exe: '/bin/sh', comm: 'sh' }] },
    decidedBy: 'process.allow',
    allowHint: '/usr/bin/nc',
    mitre: 'T1059',
    details: { capability: 'NET_RAW', listening: true, port: 4444 },
    id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    ...over,
  };
}

export function auditRecord(i = 0): RunwatchRecord {
  return {
    time: new Date(1_700_000_100_000 + i * 1000).toISOString(),
    kind: 'audit',
    host: 'node-1',
    rule: 'docker.exec',
    severity: 'medium',
    message: `docker exec into web: sh (${i})`,
    container: { id: 'c'.repeat(64), name: 'web', image: 'acr.example.io/web:1', imageId: `sha256:${'d'.repeat(64)}` },
    docker: { action: 'exec_create', execId: `exec-${i}`, command: 'sh -c id', hostUser: { uid: 1000, loginuid: 1000, user: 'alice', tty: 'pts/0' } },
    id: `00000000-0000-4000-9000-${String(i).padStart(12, '0')}`,
  };
}
