import { escapeGlob } from './path-matcher.js';
import type { ContainerInfo, Finding, Severity } from '../events/types.js';
import type { RuleId } from './rule-schema.js';
import type { Ruleset } from './ruleset.js';

/** "container web-1 (acr.acme.example/web:1)" */
export function where(info: ContainerInfo): string {
  return `container ${info.name || info.id.slice(0, 12)} (${info.image})`;
}

/** Builds a finding unless the policy turned the rule off; the policy's severity wins over `severity`. */
export function finding(rs: Ruleset, rule: RuleId, f: Omit<Finding, 'kind' | 'rule' | 'severity'>, severity?: Severity): Finding | undefined {
  const base = rs.severity(rule);
  if (base === undefined) return undefined;
  return { kind: 'alert', rule, severity: severity && !rs.severityOverridden(rule) ? severity : base, ...f };
}

/** A YAML list item a rule writer can paste under the list named by decidedBy. */
export function yamlItem(value: string): string {
  return `- ${yamlScalar(value)}`;
}

/** A scalar as YAML needs it: plain when safe, else double-quoted. */
export function yamlScalar(value: string): string {
  return /^[A-Za-z0-9_/.][A-Za-z0-9_/.:@+*-]*$/.test(value) && !value.endsWith(':') ? value : JSON.stringify(value);
}

/** A literal path as a glob (so "*" or "[" in a file name match only themselves). */
export function globLiteral(path: string): string {
  return GLOB_SPECIAL.test(path) ? escapeGlob(path) : path;
}

const GLOB_SPECIAL = /[*?[\]{}()!+@\\]/;

export function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
