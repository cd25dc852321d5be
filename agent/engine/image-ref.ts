/**
 * Image references as Docker resolves them: "nginx" is docker.io/library/nginx:latest, "acme/web" is
 * docker.io/acme/web:latest, and a first component with a dot, a colon or "localhost" is a registry.
 */

export interface ImageRef {
  /** "docker.io", "acr.acme.example", "localhost:5000"; undefined when started by image id. */
  registry?: string;
  /** Registry and path without tag or digest, e.g. "docker.io/library/nginx". */
  repository: string;
  tag?: string;
  /** "sha256:…" */
  digest?: string;
  /** The full normalised reference: repository, then ":tag" and/or "@digest". */
  normalised: string;
  /** Started by image id ("sha256:…" or a hex prefix) rather than by name. */
  byId: boolean;
}

const IMAGE_ID = /^(sha256:)?[0-9a-f]{12,64}$/;

export function parseImageRef(ref: string): ImageRef {
  const trimmed = ref.trim();
  if (IMAGE_ID.test(trimmed)) {
    const id = trimmed.startsWith('sha256:') ? trimmed : `sha256:${trimmed}`;
    return { repository: id, normalised: id, byId: true };
  }
  let name = trimmed;
  let digest: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    digest = name.slice(at + 1);
    name = name.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  const { registry, path } = splitRegistry(name);
  const repository = `${registry}/${path}`;
  if (!tag && !digest) tag = 'latest';
  const normalised = `${repository}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`;
  return { registry, repository, tag, digest, normalised, byId: false };
}

export function normaliseImageRef(ref: string): string {
  return parseImageRef(ref).normalised;
}

function splitRegistry(name: string): { registry: string; path: string } {
  const slash = name.indexOf('/');
  const first = slash >= 0 ? name.slice(0, slash) : '';
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    const registry = first.toLowerCase() === 'index.docker.io' || first.toLowerCase() === 'registry-1.docker.io' ? 'docker.io' : first.toLowerCase();
    let path = name.slice(slash + 1);
    if (registry === 'docker.io' && !path.includes('/')) path = `library/${path}`;
    return { registry, path };
  }
  return { registry: 'docker.io', path: slash >= 0 ? name : `library/${name}` };
}

const GLOB_CHARS = /[*?[{]/;

/**
 * Brings an `images:` pattern into the same form as references. A pattern whose first component holds a
 * glob and is followed by "/" is taken as written, registry included (e.g. "*.azurecr.io/web:*",
 * "**\/nginx"); anything else is normalised like a reference. A pattern that names no tag or digest (and
 * does not end in "*") covers every tag and digest of the repository.
 */
export function normaliseImagePattern(pattern: string): string {
  const p = pattern.trim();
  const slash = p.indexOf('/');
  let out: string;
  if (slash >= 0 && GLOB_CHARS.test(p.slice(0, slash))) {
    out = p;
  } else {
    const at = p.indexOf('@');
    const namePart = at >= 0 ? p.slice(0, at) : p;
    const lastSlash = namePart.lastIndexOf('/');
    const colon = namePart.lastIndexOf(':');
    const hasTag = colon > lastSlash;
    const { registry, path } = splitRegistry(hasTag ? namePart.slice(0, colon) : namePart);
    out = `${registry}/${path}${hasTag ? namePart.slice(colon) : ''}${at >= 0 ? p.slice(at) : ''}`;
  }
  const last = out.slice(out.lastIndexOf('/') + 1);
  if (!last.includes(':') && !last.includes('@') && !last.endsWith('*')) out += '{,:*,@*}';
  return out;
}

/** The number of literal (non-glob) characters: the more, the more specific a pattern is. */
export function literalLength(pattern: string): number {
  let n = 0;
  for (const ch of pattern) if (!'*?[]{}(),!+@|'.includes(ch)) n++;
  return n;
}
