/**
 * Keeps secrets out of logs, errors and config dumps. Values are registered as they are loaded
 * (connection strings, tokens, header values) and every string that leaves the agent's logger passes through here.
 */
const registered = new Set<string>();

const SECRET_PATTERNS: RegExp[] = [
  /InstrumentationKey=[^;"'\s]+/gi,
  /IngestionEndpoint=[^;"'\s]+/gi,
  /LiveEndpoint=[^;"'\s]+/gi,
  /ApplicationId=[^;"'\s]+/gi,
  /(authorization["']?\s*[:=]\s*["']?)(bearer\s+)?[^\s"',}]+/gi,
  /(api[-_]?key["']?\s*[:=]\s*["']?)[^\s"',}]+/gi,
];

export const REDACTED = '***';

/** Register a secret value so it is masked wherever it appears later. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 4) registered.add(value);
}

export function redactString(text: string): string {
  let out = text;
  for (const secret of registered) {
    if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  }
  for (const re of SECRET_PATTERNS) {
    out = out.replace(re, (match, prefix?: string) =>
      typeof prefix === 'string' && match.startsWith(prefix) ? `${prefix}${REDACTED}` : match.replace(/=.*/, `=${REDACTED}`),
    );
  }
  return out;
}

const SECRET_KEY = /(connectionstring|password|secret|token|apikey|api_key|authorization|headers)$/i;

/** A deep copy with secret-looking keys and registered values masked, for config dumps. */
export function redactValue<T>(value: T, key = ''): T {
  if (typeof value === 'string') {
    return (SECRET_KEY.test(key) && value !== '' ? REDACTED : redactString(value)) as T;
  }
  if (Array.isArray(value)) return value.map((v) => redactValue(v, key)) as T;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      out[k] = SECRET_KEY.test(k) && typeof v === 'object' && v !== null && !Array.isArray(v) ? maskAll(v) : redactValue(v, k);
    }
    return out as T;
  }
  return value;
}

function maskAll(obj: object): Record<string, string> {
  return Object.fromEntries(Object.keys(obj).map((k) => [k, REDACTED]));
}
