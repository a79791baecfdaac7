// The lab as a new user meets it: `edgemesh-cni lab up` from the repository prints the
// connectivity matrix within 60 s and leaves the lab running; `lab status`, `lab exec` and
// `lab down` work on it; and `lab down` also cleans up after `lab up` was killed midway.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

const exec = promisify(execFile);
const repo = fileURLToPath(new URL('../..', import.meta.url));
const cli = fileURLToPath(new URL('../../bin/edgemesh-cni.js', import.meta.url));
const labsToRemove = new Set<string>();

function edgemesh(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return exec(process.execPath, [cli, ...args], { cwd: repo, timeout: 120_000 });
}

/** Starts `lab up`, collecting stdout; resolves `until` when a line matches. */
function startLabUp(args: string[] = []): {
  child: ChildProcess;
  output: () => string;
  until: (re: RegExp) => Promise<number>;
} {
  const started = Date.now();
  const child = spawn(process.execPath, [cli, 'lab', 'up', ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: Array<{ re: RegExp; resolve: (ms: number) => void }> = [];
  const onData = (d: string) => {
    out += d;
    const id = /lab (em[0-9a-f]{4}):/.exec(out)?.[1];
    if (id) labsToRemove.add(id);
    for (const w of [...waiters]) {
      if (w.re.test(out)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(Date.now() - started);
      }
    }
  };
  child.stdout!.setEncoding('utf8').on('data', onData);
  child.stderr!.setEncoding('utf8').on('data', onData);
  return {
    child,
    output: () => out,
    until: (re) =>
      new Promise((resolve, reject) => {
        if (re.test(out)) return resolve(Date.now() - started);
        waiters.push({ re, resolve });
        child.once('exit', (code) =>
          setTimeout(() => reject(new Error(`lab up exited (${code}) before ${re}:\n${out}`)), 50),
        );
      }),
  };
}

function labId(output: string): string {
  const id = /lab (em[0-9a-f]{4}):/.exec(output)?.[1];
  if (!id) throw new Error(`no lab id in:\n${output}`);
  return id;
}

afterAll(async () => {
  for (const id of labsToRemove) await edgemesh(['lab', 'down', '--id', id]).catch(() => {});
});

describe('edgemesh-cni lab (CLI)', () => {
  let before: HostSnapshot;

  it('lab up prints the full matrix within 60 s and leaves the lab running', async () => {
    before = await snapshotHost();
    const up = startLabUp();
    const ms = await up.until(/pod pairs reachable by Pod IP|UNREACHABLE/);
    const exitCode = await new Promise<number | null>((r) => up.child.once('exit', (code) => r(code)));
    const out = up.output();
    console.log(out);
    console.log(`lab up → matrix printed in ${(ms / 1000).toFixed(1)} s`);
    expect(out).toMatch(/all 36 pod pairs reachable by Pod IP/);
    expect(exitCode).toBe(0);
    expect(ms).toBeLessThan(60_000);
    const id = labId(out);

    const status = (await edgemesh(['lab', 'status', '--id', id])).stdout;
    expect(status).toContain(`lab ${id} (up`);
    expect(status.match(/^(cloud|edge-a|edge-b)-\d +\S+ +\S+ +\S+ +up /gm)).toHaveLength(6);
    // Each site with its NAT kind (the default lab: port-preserving masquerade on both edges).
    expect(status).toMatch(/^cloud +public +- /m);
    expect(status).toMatch(/^edge-a +nat +masquerade +203\.0\.113\.101 +192\.168\.10\.0\/24$/m);
    expect(status).toMatch(/^edge-b +nat +masquerade +203\.0\.113\.102 +192\.168\.20\.0\/24$/m);
    const json = JSON.parse((await edgemesh(['lab', 'status', '--id', id, '--json'])).stdout) as {
      sites: Array<{ name: string; kind: string; nat?: string }>;
    };
    expect(json.sites.map((s) => `${s.name}:${s.kind}:${s.nat ?? '-'}`)).toEqual([
      'cloud:public:-',
      'edge-a:nat:masquerade',
      'edge-b:nat:masquerade',
    ]);

    // lab exec: from an edge-a pod to an edge-b pod by Pod IP, and a command's exit code passes through.
    const target = /^edge-b-1-p1 +\S+ +\S+ +(\S+)/m.exec(status)?.[1];
    expect(target).toMatch(/^10\.244\./);
    const ping = await edgemesh([
      'lab',
      'exec',
      '--id',
      id,
      'edge-a-1-p1',
      '--',
      'ping',
      '-c',
      '1',
      '-W',
      '3',
      target!,
    ]);
    expect(ping.stdout).toContain('1 received');
    await expect(edgemesh(['lab', 'exec', '--id', id, 'edge-a-1-p1', '--', 'false'])).rejects.toMatchObject({
      code: 1,
    });
    await expect(edgemesh(['lab', 'exec', '--id', id, 'nope', '--', 'true'])).rejects.toMatchObject({
      stderr: expect.stringContaining('unknown lab target nope'),
    });

    const down = (await edgemesh(['lab', 'down', '--id', id])).stdout;
    expect(down).toMatch(
      new RegExp(`lab ${id} down: 12 pods deleted \\(CNI DEL\\), \\d+ processes stopped, 22 namespaces removed`),
    );
    labsToRemove.delete(id);
    expectNothingLeft(before, await snapshotHost(), { prefix: `${id}-`, dir: `${repo}.lab/${id}`, id });
  });

  it('lab down cleans up after lab up was killed (SIGKILL) with agents running', async () => {
    const snapshot = await snapshotHost();
    const up = startLabUp(['--nodes-per-site', '1', '--pods-per-node', '1']);
    await up.until(/agents: started/);
    up.child.kill('SIGKILL');
    await new Promise((r) => up.child.once('exit', r));
    const id = labId(up.output());
    // The orphans are really there before the clean-up.
    expect((await exec('ip', ['netns', 'list'])).stdout).toContain(`${id}-inet`);
    const down = (await edgemesh(['lab', 'down', '--id', id])).stdout;
    expect(down).toMatch(new RegExp(`lab ${id} down: `));
    labsToRemove.delete(id);
    expectNothingLeft(snapshot, await snapshotHost(), { prefix: `${id}-`, dir: `${repo}.lab/${id}`, id });
  });

  it('Ctrl-C during lab up stops it and removes the half-built lab', async () => {
    const snapshot = await snapshotHost();
    const up = startLabUp(['--nodes-per-site', '1', '--pods-per-node', '1']);
    await up.until(/agents: started/);
    up.child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => up.child.once('exit', (c) => r(c)));
    const id = labId(up.output());
    expect(code).not.toBe(0);
    expect(up.output()).toContain('interrupted: stopping and removing the lab');
    expect(up.output()).toContain(`lab up failed, removing lab ${id}`);
    labsToRemove.delete(id);
    expectNothingLeft(snapshot, await snapshotHost(), { prefix: `${id}-`, dir: `${repo}.lab/${id}`, id });
  });

  it('lab status and lab down say clearly when there is no such lab', async () => {
    await expect(edgemesh(['lab', 'status', '--id', 'em0000'])).rejects.toMatchObject({
      stderr: expect.stringContaining('no lab at'),
    });
  });
});
