import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { formatPath, locate, parseYamlDocuments, zodIssuesToErrors, type SourcedDocument } from '../config/yaml-source.js';
import { RunwatchError } from '../errors.js';
import { RULE_KIND_SCHEMAS, RULE_KINDS, RULES_API_VERSION, type RuleDoc, type RuleKind } from './rule-schema.js';

/** A validated rule document with what is needed to locate any of its fields. */
export type LoadedRuleDoc = RuleDoc & { src: SourcedDocument };

/** Rule test files live beside rules in some layouts; they are read by `rules test`, never as rules. */
export const RULE_TEST_SUFFIXES = ['.cases.yaml', '.cases.yml'];

export function isRuleFile(name: string): boolean {
  return !name.startsWith('.') && /\.ya?ml$/.test(name) && !RULE_TEST_SUFFIXES.some((s) => name.endsWith(s));
}

/**
 * The files behind `paths`: a file as named, a folder's *.yaml / *.yml (recursively, sorted, without
 * dot files and *.cases.yaml). A path that cannot be read is an error.
 */
export function listFiles(paths: readonly string[], accept: (name: string) => boolean = isRuleFile): { files: string[]; errors: RunwatchError[] } {
  const files: string[] = [];
  const errors: RunwatchError[] = [];
  const walk = (dir: string) => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (e.isDirectory() && !e.name.startsWith('.')) walk(full);
      else if ((e.isFile() || e.isSymbolicLink()) && accept(e.name)) files.push(full);
    }
  };
  for (const p of paths) {
    const abs = path.resolve(p);
    try {
      if (statSync(abs).isDirectory()) walk(abs);
      else files.push(abs);
    } catch (err) {
      errors.push(
        new RunwatchError('RW_RULE_READ', `cannot read rule path: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { file: abs }, { cause: err }),
      );
    }
  }
  return { files: [...new Set(files)], errors };
}

/** Parses and validates every document of one rule file's text; all problems come back located. */
export function parseRuleText(text: string, file: string): { docs: LoadedRuleDoc[]; errors: RunwatchError[]; invalidProfiles: Set<string> } {
  const parsed = parseYamlDocuments(text, file, 'RW_RULE_YAML');
  const docs: LoadedRuleDoc[] = [];
  const errors = [...parsed.errors];
  const invalidProfiles = new Set<string>();
  for (const src of parsed.docs) {
    const raw: unknown = src.doc.toJS();
    if (raw === null || raw === undefined) continue;
    const r = validateRuleDoc(src, raw);
    if (r.doc) docs.push(r.doc);
    errors.push(...r.errors);
    const name = (raw as { kind?: unknown; name?: unknown }).name;
    if (!r.doc && (raw as { kind?: unknown }).kind === 'ImageProfile' && typeof name === 'string') invalidProfiles.add(name);
  }
  return { docs, errors, invalidProfiles };
}

function validateRuleDoc(src: SourcedDocument, raw: unknown): { doc?: LoadedRuleDoc; errors: RunwatchError[] } {
  const at = (field: (string | number)[], keyOf = false) => ({ file: src.file, ...locate(src, field, keyOf), field: formatPath(field) || undefined });
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    return {
      errors: [new RunwatchError('RW_RULE_INVALID', `a rule document is a mapping that starts with apiVersion: ${RULES_API_VERSION} and a kind`, at([]))],
    };
  }
  const obj = raw as Record<string, unknown>;
  if (obj.apiVersion === undefined) {
    return { errors: [new RunwatchError('RW_RULE_VERSION', `apiVersion is missing; rule documents start with apiVersion: ${RULES_API_VERSION}`, at([]))] };
  }
  if (obj.apiVersion !== RULES_API_VERSION) {
    return {
      errors: [
        new RunwatchError(
          'RW_RULE_VERSION',
          `unsupported apiVersion ${JSON.stringify(obj.apiVersion)}; this runwatch reads ${RULES_API_VERSION}`,
          at(['apiVersion']),
        ),
      ],
    };
  }
  if (typeof obj.kind !== 'string' || !(RULE_KINDS as string[]).includes(obj.kind)) {
    const what = obj.kind === undefined ? 'kind is missing' : `unknown kind ${JSON.stringify(obj.kind)}`;
    return { errors: [new RunwatchError('RW_RULE_INVALID', `${what}; known kinds: ${RULE_KINDS.join(', ')}`, at(obj.kind === undefined ? [] : ['kind']))] };
  }
  const kind = obj.kind as RuleKind;
  const result = RULE_KIND_SCHEMAS[kind].safeParse(raw);
  if (!result.success) return { errors: zodIssuesToErrors(src, result.error.issues, 'RW_RULE_INVALID', 'RW_RULE_UNKNOWN_KEY') };
  return { doc: { kind, doc: result.data, src } as LoadedRuleDoc, errors: [] };
}

/** Reads, parses and validates every rule file behind `paths`. Nothing is thrown: errors are collected. */
export function loadRuleDocuments(paths: readonly string[]): { docs: LoadedRuleDoc[]; errors: RunwatchError[]; files: string[]; invalidProfiles: Set<string> } {
  const { files, errors } = listFiles(paths);
  const docs: LoadedRuleDoc[] = [];
  const invalidProfiles = new Set<string>();
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      errors.push(new RunwatchError('RW_RULE_READ', `cannot read rule file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { file }, { cause: err }));
      continue;
    }
    const r = parseRuleText(text, file);
    docs.push(...r.docs);
    errors.push(...r.errors);
    for (const n of r.invalidProfiles) invalidProfiles.add(n);
  }
  return { docs, errors, files, invalidProfiles };
}
