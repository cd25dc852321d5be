import type { Finding, RunwatchEvent } from '../events/types.js';
import { auditFinding } from './admin-audit.js';
import type { Decider } from './engine.js';

/** Findings that need no rules: the admin audit trail and the agent's own notices. */
export function auditFindings(ev: RunwatchEvent): Finding[] {
  if (ev.kind === 'docker_action') {
    const f = auditFinding(ev);
    return f ? [f] : [];
  }
  if (ev.kind === 'agent_notice') {
    return [{ kind: 'audit', rule: ev.rule, severity: ev.severity, message: ev.message, details: ev.details, subject: ev.rule }];
  }
  return [];
}

/** A decider with no rules loaded: audit records only. */
export const auditOnlyDecider: Decider = { decide: (ev) => auditFindings(ev) };
