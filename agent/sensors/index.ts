import type { Config } from '../config/load.js';
import type { DockerClientRuns } from '../pipeline/docker-client-runs.js';
import { DockerSensor } from './docker/docker-sensor.js';
import { ProcessSensor } from './process/process-sensor.js';
import { NetworkSensor } from './network/network-sensor.js';
import { FileSensor } from './file/file-sensor.js';
import { ResourceSensor } from './resources/resource-sensor.js';
import type { Sensor, SensorName } from './sensor.js';

/** What the composition root shares with sensors that need more than their config. */
export interface SensorDeps {
  dockerClients: DockerClientRuns;
}

export type SensorFactory = (config: Config, deps: SensorDeps) => Sensor | undefined;

/** Every sensor runwatch has, in start order; a factory returns undefined when config turns it off. */
export const sensorFactories = {
  docker: (config) =>
    new DockerSensor({
      socketPath: config.docker.socket,
      waitForDaemon: config.docker.waitForDaemon,
      reconnectInitialDelayMs: config.docker.reconnectInitialDelayMs,
      reconnectMaxDelayMs: config.docker.reconnectMaxDelayMs,
    }),
  process: (config, deps) => {
    const p = config.sensors.process;
    return new ProcessSensor({
      source: p.source,
      ancestors: p.ancestors,
      realtime: p.realtime,
      perCpuReaders: p.perCpuReaders,
      procfsIntervalMs: p.procfsIntervalMs,
      trackDockerCli: p.trackDockerCli,
      dockerClients: deps.dockerClients,
    });
  },
  file: (config) => new FileSensor(config.sensors.file),
  network: (config) => new NetworkSensor({ intervalSeconds: config.sensors.network.intervalSeconds }),
  resources: (config) =>
    new ResourceSensor({ intervalMs: config.metrics.intervalSeconds * 1000, source: config.metrics.source, dockerSocket: config.docker.socket }),
} satisfies Record<SensorName, SensorFactory>;

export function createSensors(config: Config, deps: SensorDeps): Sensor[] {
  const out: Sensor[] = [];
  for (const [name, factory] of Object.entries(sensorFactories) as [SensorName, SensorFactory][]) {
    const enabled = name === 'resources' ? config.metrics.enabled : config.sensors[name].enabled;
    if (!enabled) continue;
    const s = factory(config, deps);
    if (s) out.push(s);
  }
  return out;
}
