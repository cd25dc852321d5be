import { describe, expect, it } from 'vitest';
import type { DockerActionEvent } from '../../../../agent/events/types.js';
import { DockerClientRuns, parseDockerCli, redactedCommandLine, type DockerClientRun } from '../../../../agent/pipeline/docker-client-runs.js';

const WEB = 'abcdef0123456789'.repeat(4);
const DB = '0123456789abcdef'.repeat(4);
const argv = (line: string) => line.split(' ');

function run(ts: number, line: string, extra: Partial<DockerClientRun> = {}): DockerClientRun {
  return { ts, pid: 4000 + ts, uid: 1000, args: argv(line), ...extra };
}

function action(ts: number, act: string, containerId = WEB): DockerActionEvent {
  return { kind: 'docker_action', ts, scope: 'container', action: act, containerId };
}

describe('parseDockerCli', () => {
  it.each([
    ['docker exec -it web sh', 'exec', ['web']],
    ['docker container exec web id', 'exec', ['web']],
    ['docker -H unix:///run/docker.sock --context prod -D exec web id', 'exec', ['web']],
    ['docker --log-level debug --tlscert /c.pem exec web id', 'exec', ['web']],
    ['docker --host=unix:///x exec web id', 'exec', ['web']],
    ['docker exec -u root -e A=1 --env-file /e -w /tmp --detach-keys ctrl-x web id', 'exec', ['web']],
    ['docker exec -itu root web id', 'exec', ['web']],
    ['docker exec --user=root -eX=1 web id', 'exec', ['web']],
    ['docker exec web cat other', 'exec', ['web']],
    ['docker exec web -- ls', 'exec', ['web']],
    ['docker cp web:/etc/passwd ./passwd', 'cp', ['web']],
    ['docker cp ./tool web:/tmp/tool', 'cp', ['web']],
    ['docker cp /abs/tool web:/tmp/', 'cp', ['web']],
    ['docker cp -a web:/a db:/b', 'cp', ['web', 'db']],
    ['docker rm -f web db', 'rm', ['web', 'db']],
    ['docker kill -s KILL web', 'kill', ['web']],
    ['docker stop -t 3 web', 'stop', ['web']],
    ['docker commit -m msg -a me web repo:tag', 'commit', ['web']],
    ['docker export -o out.tar web', 'export', ['web']],
    ['docker update --cpus 2 -m 1g web', 'update', ['web']],
    ['docker rename web web2', 'rename', ['web']],
  ])('%s', (line, command, containers) => {
    expect(parseDockerCli(argv(line))).toEqual({ command, containers });
  });

  it('gives undefined for commands that cause no attributable action', () => {
    for (const line of ['docker', 'docker ps -a', 'docker logs web', 'docker run -it busybox sh', 'docker -H x', 'docker image ls'])
      expect(parseDockerCli(argv(line)), line).toBeUndefined();
  });
});

describe('DockerClientRuns', () => {
  it('keeps only runs of attributable commands', () => {
    const runs = new DockerClientRuns();
    expect(runs.add(run(1, 'docker ps'))).toBe(false);
    expect(runs.add(run(1, 'docker exec'))).toBe(false);
    expect(runs.add(run(1, 'docker exec web id'))).toBe(true);
  });

  it('names the host user behind an action, matching the container by name or id prefix', () => {
    const runs = new DockerClientRuns();
    runs.add(run(1000, 'docker exec -it web sh', { loginuid: 1000, user: 'alice', tty: 'pts/1' }));
    expect(runs.resolve(action(1100, 'exec_create'), 'web')).toEqual({
      uid: 1000,
      loginuid: 1000,
      user: 'alice',
      tty: 'pts/1',
      pid: 5000,
      command: 'docker exec -it web sh',
    });
    expect(runs.resolve(action(1100, 'exec_start'), 'web')?.user).toBe('alice');
    // Another container: the run names web, not db.
    expect(runs.resolve(action(1100, 'exec_start', DB), 'db')).toBeUndefined();
    runs.add(run(2000, `docker exec ${DB.slice(0, 4)} id`, { user: 'bob' }));
    expect(runs.resolve(action(2100, 'exec_start', DB), 'db')?.user).toBe('bob');
  });

  it('needs at least 4 hex digits of an id prefix', () => {
    const runs = new DockerClientRuns();
    runs.add(run(1000, `docker exec ${WEB.slice(0, 3)} id`));
    expect(runs.resolve(action(1100, 'exec_start'), 'web')).toBeUndefined();
    runs.add(run(1001, `docker exec ${WEB.slice(0, 12)} id`));
    expect(runs.resolve(action(1100, 'exec_start'), 'web')?.pid).toBe(5001);
  });

  it('matches docker cp NAME:path to the copy actions', () => {
    const runs = new DockerClientRuns();
    runs.add(run(1000, 'docker cp web:/etc/shadow ./loot', { user: 'mallory' }));
    expect(runs.resolve(action(1050, 'archive-path'), 'web')?.user).toBe('mallory');
    expect(runs.resolve(action(1050, 'exec_start'), 'web')).toBeUndefined();
  });

  it('does not take a container named in the command run inside another one', () => {
    const runs = new DockerClientRuns();
    runs.add(run(1000, 'docker exec web id', { user: 'bob' }));
    runs.add(run(1010, 'docker exec db echo web', { user: 'alice' }));
    expect(runs.resolve(action(1020, 'exec_start'), 'web')?.user).toBe('bob');
  });

  it('looks only within the time window, preferring a run before the action to one timestamped after it', () => {
    const runs = new DockerClientRuns({ windowMs: 5000, skewMs: 500 });
    runs.add(run(1000, 'docker exec web id', { user: 'early' }));
    expect(runs.resolve(action(6001, 'exec_start'), 'web')).toBeUndefined();
    expect(runs.resolve(action(5999, 'exec_start'), 'web')?.user).toBe('early');
    runs.add(run(7000, 'docker exec web id', { user: 'late' }));
    expect(runs.resolve(action(6600, 'exec_start'), 'web')?.user).toBe('late');
    expect(runs.resolve(action(6400, 'exec_start'), 'web')).toBeUndefined();
    runs.add(run(6900, 'docker exec web id', { user: 'before' }));
    expect(runs.resolve(action(6950, 'exec_start'), 'web')?.user).toBe('before');
  });

  it('forgets the oldest runs past its capacity', () => {
    const runs = new DockerClientRuns({ capacity: 2 });
    runs.add(run(1000, 'docker exec web id', { user: 'first' }));
    runs.add(run(1001, 'docker exec db id'));
    runs.add(run(1002, 'docker exec db id'));
    expect(runs.resolve(action(1100, 'exec_start'), 'web')).toBeUndefined();
  });

  it('resolves nothing for actions the CLI does not cause or events without a container', () => {
    const runs = new DockerClientRuns();
    runs.add(run(1000, 'docker rm -f web'));
    expect(runs.resolve(action(1100, 'kill'), 'web')).toBeDefined();
    expect(runs.resolve(action(1100, 'exec_start'), 'web')).toBeUndefined();
    expect(runs.resolve({ ...action(1100, 'kill'), containerId: undefined }, 'web')).toBeUndefined();
  });
});

describe('redactedCommandLine', () => {
  it('masks environment values, never names or other arguments', () => {
    expect(redactedCommandLine(argv('docker exec -e DB_PASSWORD=hunter2 --env=TOKEN=abc -eKEY=v -ite X=1 --env-file /run/env web env'))).toBe(
      'docker exec -e DB_PASSWORD=*** --env=TOKEN=*** -eKEY=*** -ite X=*** --env-file /run/env web env',
    );
    expect(redactedCommandLine(argv('docker exec -e HOME web id'))).toBe('docker exec -e HOME web id');
  });
});
