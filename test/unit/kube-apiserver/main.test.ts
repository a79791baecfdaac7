// The process entry the lab runs: one JSON ready line on stdout, a kubeconfig that works,
// a clean exit on SIGTERM, and a clear failure for a bad --listen.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';

const MAIN = join(import.meta.dirname, '../../../lab/kube-apiserver/main.ts');
let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('lab/kube-apiserver/main.ts', { timeout: 60_000 }, () => {
  it('prints a ready line, serves the kubeconfig it wrote, and exits 0 on SIGTERM', async () => {
    dir = await mkdtemp(join(tmpdir(), 'kas-main-'));
    const kubeconfig = join(dir, 'kubeconfig');
    const child = spawn(process.execPath, [MAIN, '--listen', '127.0.0.1:0', '--kubeconfig-out', kubeconfig], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const firstLine = await new Promise<string>((resolve, reject) => {
        createInterface(child.stdout!).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
      });
      const ready = JSON.parse(firstLine);
      expect(ready).toMatchObject({ ready: true, url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) });
      expect(await readFile(kubeconfig, 'utf8')).toContain(ready.url);
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig);
      const core = kc.makeApiClient(CoreV1Api);
      await core.createNode({ body: { metadata: { name: 'n1' } } });
      expect((await core.listNode()).items).toHaveLength(1);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('fails with a clear message for a malformed --listen', async () => {
    const child = spawn(process.execPath, [MAIN, '--listen', 'nonsense'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(code).toBe(1);
    expect(stderr).toContain('--listen must be HOST:PORT');
  });
});
