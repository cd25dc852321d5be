import { minimatch } from 'minimatch';
import { describe, expect, it } from 'vitest';
import { literalLength, normaliseImagePattern, parseImageRef } from '../../../agent/engine/image-ref.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

describe('image references', () => {
  it.each([
    ['nginx', 'docker.io/library/nginx:latest', 'docker.io'],
    ['nginx:1.27', 'docker.io/library/nginx:1.27', 'docker.io'],
    ['library/nginx:1.27', 'docker.io/library/nginx:1.27', 'docker.io'],
    ['docker.io/nginx', 'docker.io/library/nginx:latest', 'docker.io'],
    ['index.docker.io/library/nginx:1', 'docker.io/library/nginx:1', 'docker.io'],
    ['runwatch-test/busybox:1', 'docker.io/runwatch-test/busybox:1', 'docker.io'],
    ['acr.acme.example/team/web:2', 'acr.acme.example/team/web:2', 'acr.acme.example'],
    ['localhost:5000/web', 'localhost:5000/web:latest', 'localhost:5000'],
    ['localhost/web:3', 'localhost/web:3', 'localhost'],
    [`nginx@${DIGEST}`, `docker.io/library/nginx@${DIGEST}`, 'docker.io'],
    [`nginx:1.27@${DIGEST}`, `docker.io/library/nginx:1.27@${DIGEST}`, 'docker.io'],
    ['REGISTRY.Example.COM:443/web:1', 'registry.example.com:443/web:1', 'registry.example.com:443'],
  ])('%s → %s', (ref, normalised, registry) => {
    const r = parseImageRef(ref);
    expect(r.normalised).toBe(normalised);
    expect(r.registry).toBe(registry);
    expect(r.byId).toBe(false);
  });

  it('keeps tag and digest apart', () => {
    expect(parseImageRef(`localhost:5000/a/b:7@${DIGEST}`)).toMatchObject({ repository: 'localhost:5000/a/b', tag: '7', digest: DIGEST });
    expect(parseImageRef('nginx').tag).toBe('latest');
    expect(parseImageRef(`nginx@${DIGEST}`).tag).toBeUndefined();
  });

  it('recognises a container started by image id', () => {
    expect(parseImageRef('4cd999290cf0')).toEqual({ byId: true, repository: 'sha256:4cd999290cf0', normalised: 'sha256:4cd999290cf0' });
    expect(parseImageRef(`sha256:${'c'.repeat(64)}`).byId).toBe(true);
  });
});

describe('image patterns', () => {
  const matches = (pattern: string, ref: string) => minimatch(parseImageRef(ref).normalised, normaliseImagePattern(pattern));

  it('a bare repository covers every tag and digest', () => {
    expect(normaliseImagePattern('nginx')).toBe('docker.io/library/nginx{,:*,@*}');
    expect(matches('nginx', 'nginx:1.27')).toBe(true);
    expect(matches('nginx', `nginx@${DIGEST}`)).toBe(true);
    expect(matches('nginx', 'nginxinc/nginx-unprivileged:1')).toBe(false);
    expect(matches('nginx', 'nginx-extra:1')).toBe(false);
  });

  it('a tag glob covers tags, not digests', () => {
    expect(matches('nginx:1.*', 'docker.io/library/nginx:1.27')).toBe(true);
    expect(matches('nginx:1.*', 'nginx:2.0')).toBe(false);
    expect(matches('nginx:*', `nginx@${DIGEST}`)).toBe(false);
  });

  it('a digest pattern pins one image', () => {
    expect(matches(`nginx@${DIGEST}`, `docker.io/library/nginx@${DIGEST}`)).toBe(true);
    expect(matches(`nginx@${DIGEST}`, 'nginx:1')).toBe(false);
  });

  it('a glob in the first component is taken with the registry', () => {
    expect(normaliseImagePattern('*.azurecr.io/web:*')).toBe('*.azurecr.io/web:*');
    expect(matches('*.azurecr.io/web:*', 'team.azurecr.io/web:1')).toBe(true);
    expect(matches('**/nginx', 'acr.acme.example/mirror/nginx:1')).toBe(true);
    expect(matches('acr.acme.example/**', 'acr.acme.example/a/b:1')).toBe(true);
    expect(matches('acr.acme.example/*', 'acr.acme.example/web:1')).toBe(true);
  });

  it('counts literal characters for specificity', () => {
    expect(literalLength('docker.io/library/nginx:1.*')).toBeGreaterThan(literalLength('docker.io/library/nginx:*'));
  });
});
