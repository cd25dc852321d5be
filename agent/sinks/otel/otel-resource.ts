import { readFileSync } from 'node:fs';
import path from 'node:path';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { packageRoot } from '../../config/load.js';

let version: string | undefined;

/** runwatch's own version, from package.json. */
export function runwatchVersion(): string {
  version ??= (JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return version;
}

/**
 * Who is reporting. In Application Insights `service.name` becomes cloud_RoleName and `service.instance.id`
 * cloud_RoleInstance, so KQL can split by host without parsing properties.
 */
export function runwatchResource(host: string): Resource {
  return resourceFromAttributes({ 'service.name': 'runwatch', 'service.version': runwatchVersion(), 'service.instance.id': host, 'host.name': host });
}
