import type { ContainerLifecycleAction, DockerActionEvent } from '../../events/types.js';
import { AUDITED_CONTAINER_ACTION_NAMES, AUDITED_IMAGE_ACTION_NAMES } from '../../engine/admin-audit.js';

/** A message of Docker's /events stream, as much of it as runwatch reads. */
export interface DockerEventMessage {
  Type: string;
  Action: string;
  Actor: { ID: string; Attributes?: Record<string, string> };
  time: number;
  timeNano: number;
  scope?: string;
}

export function isDockerEventMessage(x: unknown): x is DockerEventMessage {
  if (!x || typeof x !== 'object') return false;
  const m = x as Record<string, unknown>;
  return (
    typeof m.Type === 'string' &&
    typeof m.Action === 'string' &&
    typeof m.timeNano === 'number' &&
    !!m.Actor &&
    typeof (m.Actor as Record<string, unknown>).ID === 'string'
  );
}

/** Identity of an event for de-duplication across replays. */
export function eventKey(m: DockerEventMessage): string {
  return `${m.timeNano}|${m.Type}|${m.Action}|${m.Actor.ID}`;
}

const LIFECYCLE: ReadonlySet<string> = new Set<ContainerLifecycleAction>([
  'create',
  'start',
  'restart',
  'pause',
  'unpause',
  'die',
  'stop',
  'destroy',
  'rename',
  'update',
]);
const AUDITED_CONTAINER = new Set(AUDITED_CONTAINER_ACTION_NAMES);
const AUDITED_IMAGE = new Set(AUDITED_IMAGE_ACTION_NAMES);

export type ClassifiedEvent =
  | { type: 'lifecycle'; action: ContainerLifecycleAction; containerId: string; exitCode?: number }
  | { type: 'action'; event: Omit<DockerActionEvent, 'ts'> }
  | { type: 'ignored' };

/**
 * What a Docker event means to runwatch. One Docker event can be both (e.g. "pause" changes the
 * container's state and is an admin action); `classify` returns the audit side, `lifecycleOf` the other.
 */
export function classify(m: DockerEventMessage): ClassifiedEvent[] {
  const out: ClassifiedEvent[] = [];
  const colon = m.Action.indexOf(':');
  const action = colon >= 0 ? m.Action.slice(0, colon).trim() : m.Action;
  const detail = colon >= 0 ? m.Action.slice(colon + 1).trim() : undefined;
  const attrs = m.Actor.Attributes ?? {};
  if (m.Type === 'container') {
    if (LIFECYCLE.has(action)) {
      const lc: ClassifiedEvent = { type: 'lifecycle', action: action as ContainerLifecycleAction, containerId: m.Actor.ID };
      if (action === 'die' && attrs.exitCode !== undefined) lc.exitCode = Number(attrs.exitCode);
      out.push(lc);
    }
    if (AUDITED_CONTAINER.has(action)) {
      const ev: Omit<DockerActionEvent, 'ts'> = {
        kind: 'docker_action',
        scope: 'container',
        action,
        containerId: m.Actor.ID,
        attributes: pickAttributes(attrs),
      };
      if (attrs.execID) ev.execId = attrs.execID;
      if (detail && action.startsWith('exec_')) ev.command = detail;
      if (action === 'kill' && attrs.signal) ev.signal = attrs.signal;
      out.push({ type: 'action', event: ev });
    }
  } else if (m.Type === 'image' && AUDITED_IMAGE.has(action)) {
    out.push({ type: 'action', event: { kind: 'docker_action', scope: 'image', action, image: attrs.name ?? m.Actor.ID, attributes: pickAttributes(attrs) } });
  }
  return out.length ? out : [{ type: 'ignored' }];
}

/** Keeps Docker's attributes except labels (which the container context carries already). */
function pickAttributes(attrs: Record<string, string>): Record<string, string> {
  const keep = ['name', 'image', 'execID', 'exitCode', 'signal', 'path', 'oldName', 'comment', 'imageID', 'author'];
  const out: Record<string, string> = {};
  for (const k of keep) if (attrs[k] !== undefined) out[k] = attrs[k];
  return out;
}
