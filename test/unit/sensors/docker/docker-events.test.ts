import { describe, expect, it } from 'vitest';
import { classify, eventKey, isDockerEventMessage, type DockerEventMessage } from '../../../../agent/sensors/docker/docker-events.js';

const base = (Type: string, Action: string, attrs: Record<string, string> = {}): DockerEventMessage => ({
  Type,
  Action,
  Actor: { ID: 'c'.repeat(64), Attributes: attrs },
  time: 1,
  timeNano: 1_000_000_001,
});

describe('Docker event classification', () => {
  it('reads the command of exec_create/exec_start and the exec id', () => {
    const [c] = classify(base('container', 'exec_start: sh -c id', { execID: 'x1', name: 'web' }));
    expect(c).toMatchObject({ type: 'action', event: { action: 'exec_start', command: 'sh -c id', execId: 'x1', scope: 'container' } });
  });

  it('gives both the lifecycle and the audit side of pause/stop/restart', () => {
    const kinds = classify(base('container', 'stop')).map((c) => c.type);
    expect(kinds).toEqual(['lifecycle', 'action']);
  });

  it('maps docker cp (archive-path) and kill with its signal', () => {
    expect(classify(base('container', 'archive-path', { path: '/etc' }))[0]).toMatchObject({
      type: 'action',
      event: { action: 'archive-path', attributes: { path: '/etc' } },
    });
    expect(classify(base('container', 'kill', { signal: '15' }))[0]).toMatchObject({ type: 'action', event: { signal: '15' } });
  });

  it('audits image pull/tag/delete but ignores other types', () => {
    expect(classify(base('image', 'tag', { name: 'evil.example.net/x:1' }))[0]).toMatchObject({
      type: 'action',
      event: { scope: 'image', action: 'tag', image: 'evil.example.net/x:1' },
    });
    expect(classify(base('network', 'connect'))).toEqual([{ type: 'ignored' }]);
    expect(classify(base('container', 'exec_die'))).toEqual([{ type: 'ignored' }]);
  });

  it('carries the exit code of die', () => {
    expect(classify(base('container', 'die', { exitCode: '137' }))[0]).toMatchObject({ type: 'lifecycle', action: 'die', exitCode: 137 });
  });

  it('rejects malformed messages and keys events for de-duplication', () => {
    expect(isDockerEventMessage({ Type: 'container' })).toBe(false);
    expect(isDockerEventMessage(null)).toBe(false);
    expect(isDockerEventMessage(base('container', 'start'))).toBe(true);
    expect(eventKey(base('container', 'start'))).not.toBe(eventKey(base('container', 'die')));
  });
});
