import { LineCounter, parseAllDocuments, isNode, type Document } from 'yaml';
import type { z } from 'zod';
import { RunwatchError, type ErrorCode } from '../errors.js';

/** A YAML document with what is needed to point at any field of it. */
export interface SourcedDocument {
  file: string;
  doc: Document.Parsed;
  lineCounter: LineCounter;
  /** 1-based line where the document starts. */
  line: number;
}

export type FieldPath = readonly (string | number)[];

/** Parses every document of a YAML text; syntax errors come back located, not thrown. */
export function parseYamlDocuments(text: string, file: string, code: ErrorCode): { docs: SourcedDocument[]; errors: RunwatchError[] } {
  const lineCounter = new LineCounter();
  const parsed = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const list = Array.isArray(parsed) ? parsed : [];
  const docs: SourcedDocument[] = [];
  const errors: RunwatchError[] = [];
  for (const doc of list) {
    for (const e of doc.errors) {
      const pos = lineCounter.linePos(e.pos[0]);
      errors.push(new RunwatchError(code, e.message.split('\n')[0], { file, line: pos.line, column: pos.col }));
    }
    if (doc.errors.length === 0) {
      const start = doc.contents && isNode(doc.contents) && doc.contents.range ? doc.contents.range[0] : 0;
      docs.push({ file, doc, lineCounter, line: lineCounter.linePos(start).line });
    }
  }
  return { docs, errors };
}

/** Line and column of the node at `path` (or of the nearest ancestor that exists). */
export function locate(src: SourcedDocument, path: FieldPath, keyOf = false): { line: number; column: number } {
  for (let n = path.length; n >= 0; n--) {
    const sub = path.slice(0, n);
    let node: unknown;
    if (keyOf && n === path.length && n > 0) {
      const parent = sub.length > 1 ? src.doc.getIn(sub.slice(0, -1), true) : src.doc.contents;
      node = findKeyNode(parent, sub[sub.length - 1]);
    }
    node ??= sub.length === 0 ? src.doc.contents : src.doc.getIn(sub, true);
    if (isNode(node) && node.range) {
      const p = src.lineCounter.linePos(node.range[0]);
      return { line: p.line, column: p.col };
    }
  }
  return { line: src.line, column: 1 };
}

function findKeyNode(parent: unknown, key: string | number): unknown {
  const items = (parent as { items?: { key?: unknown }[] } | undefined)?.items;
  if (!Array.isArray(items)) return undefined;
  for (const item of items) {
    const k = item.key as { value?: unknown } | undefined;
    if (k && isNode(k) && k.value === key) return k;
  }
  return undefined;
}

export function formatPath(path: FieldPath): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

/** Turns zod's issues into located errors. Unknown keys point at the key itself. */
export function zodIssuesToErrors(
  src: SourcedDocument,
  issues: readonly z.core.$ZodIssue[],
  code: ErrorCode,
  unknownKeyCode: ErrorCode = code,
): RunwatchError[] {
  const out: RunwatchError[] = [];
  for (const issue of issues) {
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const full = [...path, key];
        const at = locate(src, full, true);
        out.push(new RunwatchError(unknownKeyCode, `unknown key "${key}"`, { file: src.file, ...at, field: formatPath(full) }));
      }
      continue;
    }
    const at = locate(src, path);
    out.push(new RunwatchError(code, issue.message, { file: src.file, ...at, field: formatPath(path) || undefined }));
  }
  return out;
}
