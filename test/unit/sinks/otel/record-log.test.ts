import { SeverityNumber } from '@opentelemetry/api-logs';
import { describe, expect, it } from 'vitest';
import { runwatchResource } from '../../../../agent/sinks/otel/otel-resource.js';
import { CUSTOM_EVENT_ATTRIBUTE, flattenRecord, toLogRecord } from '../../../../agent/sinks/otel/record-log.js';
import { alertRecord, auditRecord } from '../../../fixtures/records.js';

describe('flattenRecord', () => {
  it('turns nested record fields into dotted names a KQL query can use directly', () => {
    const flat = flattenRecord(alertRecord(7));
    expect(flat).toEqual({
      host: 'node-1',
      rule: 'Unexpected Process',
      severity: 'high',
      message: 'Detect /usr/bin/nc started in web (7)',
      'container.id': 'c'.repeat(64),
      'container.name': 'web',
      'container.image': 'acr.example.io/web:1',
      'container.imageId': `sha256:${'d'.repeat(64)}`,
      'container.labels': '{"com.docker.compose.service":"web","team":"a"}',
      profile: 'acme-web',
      'process.pid': 4242,
      'process.ppid': 1,
      'process.exe': '/usr/bin/nc',
      'process.args': ['nc', '-l', '-p', '4444'],
      'process.uid': 0,
      'process.user': 'root',
      'process.ancestors': '[{"pid":1,"exe":"/bin/sh","comm":"sh"}]',
      decidedBy: 'process.allow',
      allowHint: '/usr/bin/nc',
      mitre: 'T1059',
      'details.capability': 'NET_RAW',
      'details.listening': true,
      'details.port': 4444,
      id: alertRecord(7).id,
    });
    expect(flattenRecord(auditRecord(1))).toMatchObject({
      'docker.action': 'exec_create',
      'docker.hostUser.uid': 1000,
      'docker.hostUser.user': 'alice',
      'docker.command': 'sh -c id',
    });
  });

  it('carries grouping counts', () => {
    expect(flattenRecord(alertRecord(1, { count: 12, firstSeen: 'a', lastSeen: 'b' }))).toMatchObject({ count: 12, firstSeen: 'a', lastSeen: 'b' });
  });
});

describe('toLogRecord', () => {
  it('makes a custom event named after the record kind, at the record time, with severity', () => {
    const resource = runwatchResource('node-1');
    const alert = toLogRecord(alertRecord(3), resource);
    expect(alert.attributes[CUSTOM_EVENT_ATTRIBUTE]).toBe('RunwatchAlert');
    expect(alert.eventName).toBe('RunwatchAlert');
    expect(alert.severityNumber).toBe(SeverityNumber.ERROR);
    expect(alert.body).toBe(alertRecord(3).message);
    expect(new Date(alert.hrTime[0] * 1000 + alert.hrTime[1] / 1e6).toISOString()).toBe(alertRecord(3).time);
    const audit = toLogRecord(auditRecord(1), resource);
    expect(audit.attributes[CUSTOM_EVENT_ATTRIBUTE]).toBe('RunwatchAudit');
    expect(audit.severityNumber).toBe(SeverityNumber.WARN);
    expect(resource.attributes).toMatchObject({ 'service.name': 'runwatch', 'service.instance.id': 'node-1' });
  });
});
