import type { DockerActionEvent, Finding, Severity } from '../events/types.js';

interface AuditRule {
  rule: string;
  severity: Severity;
  verb: string;
}

/** Docker API actions that count as administrative access to a container or image (the guide's audit trail). */
const AUDITED_ACTIONS: Record<string, AuditRule> = {
  exec_create: { rule: 'audit.exec', severity: 'medium', verb: 'exec created' },
  exec_start: { rule: 'audit.exec', severity: 'medium', verb: 'exec started' },
  attach: { rule: 'audit.attach', severity: 'medium', verb: 'attached to' },
  'archive-path': { rule: 'audit.cp', severity: 'medium', verb: 'copied files out of' },
  'extract-to-dir': { rule: 'audit.cp', severity: 'medium', verb: 'copied files into' },
  copy: { rule: 'audit.cp', severity: 'medium', verb: 'copied files from' },
  commit: { rule: 'audit.commit', severity: 'medium', verb: 'committed' },
  export: { rule: 'audit.export', severity: 'medium', verb: 'exported' },
  kill: { rule: 'audit.kill', severity: 'low', verb: 'killed' },
  pause: { rule: 'audit.pause', severity: 'low', verb: 'paused' },
  unpause: { rule: 'audit.unpause', severity: 'low', verb: 'unpaused' },
  stop: { rule: 'audit.stop', severity: 'low', verb: 'stopped' },
  restart: { rule: 'audit.restart', severity: 'low', verb: 'restarted' },
  rename: { rule: 'audit.rename', severity: 'low', verb: 'renamed' },
  update: { rule: 'audit.update', severity: 'low', verb: 'updated the resources of' },
};

const AUDITED_IMAGE_ACTIONS: Record<string, Severity> = {
  pull: 'info',
  push: 'low',
  tag: 'low',
  untag: 'info',
  delete: 'low',
  import: 'low',
  load: 'low',
  save: 'low',
};

/** The Docker actions (container scope) that produce audit records. */
export const AUDITED_CONTAINER_ACTION_NAMES = Object.keys(AUDITED_ACTIONS);
export const AUDITED_IMAGE_ACTION_NAMES = Object.keys(AUDITED_IMAGE_ACTIONS);

/** One audit finding for an administrative Docker action, or none for actions outside the audit trail. */
export function auditFinding(ev: DockerActionEvent): Finding | undefined {
  if (ev.scope === 'image') {
    const severity = AUDITED_IMAGE_ACTIONS[ev.action];
    if (!severity) return undefined;
    return {
      kind: 'audit',
      rule: `audit.image_${ev.action}`,
      severity,
      message: `Image ${ev.action}: ${ev.image ?? 'unknown image'}${byWhom(ev)}`,
      subject: ev.image,
    };
  }
  const spec = AUDITED_ACTIONS[ev.action];
  if (!spec) return undefined;
  const name = ev.container?.name ?? ev.containerId?.slice(0, 12) ?? 'unknown container';
  let what = '';
  if (ev.command) what = `: ${ev.command}`;
  else if (ev.signal) what = ` with signal ${ev.signal}`;
  else if (ev.attributes?.path) what = `: ${ev.attributes.path}`;
  return {
    kind: 'audit',
    rule: spec.rule,
    severity: spec.severity,
    message: `Administrative access: ${spec.verb} container ${name}${what}${byWhom(ev)}`,
    subject: ev.execId ?? ev.action,
  };
}

function byWhom(ev: DockerActionEvent): string {
  const u = ev.hostUser;
  if (!u) return '';
  const who = u.user ?? `uid ${u.uid}`;
  return ` (host user ${who}${u.tty ? ` on ${u.tty}` : ''})`;
}
