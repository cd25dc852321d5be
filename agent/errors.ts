/**
 * Coded errors. Every error a user can cause names where: file, line, column and field when known.
 * Messages never contain secrets; see config/redact.ts.
 */
export type ErrorCode =
  | 'RW_CONFIG_READ'
  | 'RW_CONFIG_YAML'
  | 'RW_CONFIG_INVALID'
  | 'RW_CONFIG_ENV'
  | 'RW_DOCKER_UNREACHABLE'
  | 'RW_RULE_READ'
  | 'RW_RULE_YAML'
  | 'RW_RULE_INVALID'
  | 'RW_RULE_UNKNOWN_KEY'
  | 'RW_RULE_BAD_GLOB'
  | 'RW_RULE_BAD_CIDR'
  | 'RW_RULE_EXTENDS'
  | 'RW_RULE_DUPLICATE'
  | 'RW_RULE_VERSION'
  | 'RW_RULE_TEST'
  | 'RW_SENSOR'
  | 'RW_SINK'
  | 'RW_SPOOL'
  | 'RW_USAGE';

export interface ErrorLocation {
  file?: string;
  line?: number;
  column?: number;
  /** Dotted path of the offending field, e.g. "outputs.jsonl.path" or "process.allow[3]". */
  field?: string;
}

export class RunwatchError extends Error {
  readonly code: ErrorCode;
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  readonly field?: string;

  constructor(code: ErrorCode, message: string, where: ErrorLocation = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RunwatchError';
    this.code = code;
    this.file = where.file;
    this.line = where.line;
    this.column = where.column;
    this.field = where.field;
  }

  /** "file:line:column: field: message [CODE]" — the form editors and terminals link. */
  format(): string {
    let at = '';
    if (this.file) {
      at = this.file;
      if (this.line !== undefined) at += `:${this.line}`;
      if (this.line !== undefined && this.column !== undefined) at += `:${this.column}`;
      at += ': ';
    }
    const field = this.field ? `${this.field}: ` : '';
    return `${at}${field}${this.message} [${this.code}]`;
  }
}

/** Several located errors at once (config and rule validation report all they find). */
export class RunwatchErrors extends Error {
  constructor(readonly errors: RunwatchError[]) {
    super(errors.map((e) => e.format()).join('\n'));
    this.name = 'RunwatchErrors';
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof RunwatchError) return err.format();
  if (err instanceof Error) return err.message;
  return String(err);
}
