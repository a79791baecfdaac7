import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildConflist, installCniClient, writeConflist } from '../../../agent/cni-files.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'em-agent-cni-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('CNI files on the host', () => {
  it('writes a 1.0.0 conflist offering 1.1.0, pointing the edgemesh plugin at the socket, chaining portmap when present', async () => {
    const bin = join(dir, 'bin');
    const conf = join(dir, 'net.d', '10-edgemesh.conflist');
    const plain = await buildConflist({ socketPath: '/run/em/cni.sock', cniBinDir: bin });
    // 1.0.0: runtimes on libcni < 1.2 (containerd 1.6/1.7, podman 4) refuse 1.1.0 results.
    expect(plain).toEqual({
      cniVersion: '1.0.0',
      cniVersions: ['1.0.0', '1.1.0'],
      name: 'edgemesh',
      plugins: [{ type: 'edgemesh', socket: '/run/em/cni.sock' }],
    });
    expect(await writeConflist(conf, plain)).toBe(true);
    expect(JSON.parse(readFileSync(conf, 'utf8'))).toEqual(plain);
    // Unchanged content is not rewritten (runtimes watch the directory).
    const mtime = statSync(conf).mtimeMs;
    expect(await writeConflist(conf, plain)).toBe(false);
    expect(statSync(conf).mtimeMs).toBe(mtime);
    // No temporary file is left next to it.
    expect(readdirSync(join(dir, 'net.d'))).toEqual(['10-edgemesh.conflist']);

    const fakePortmap = join(dir, 'portmap-src');
    writeFileSync(fakePortmap, '#!/bin/sh\n');
    await installCniClient(join(bin, 'portmap'), fakePortmap);
    const chained = await buildConflist({ socketPath: '/run/em/cni.sock', cniBinDir: bin });
    expect((chained.plugins as Array<{ type: string }>).map((p) => p.type)).toEqual(['edgemesh', 'portmap']);
  });

  it('writes the configured cniVersion and offers only the versions at or above it', async () => {
    const bin = join(dir, 'bin');
    expect(await buildConflist({ socketPath: '/s', cniBinDir: bin, cniVersion: '1.1.0' })).toMatchObject({
      cniVersion: '1.1.0',
    });
    expect(await buildConflist({ socketPath: '/s', cniBinDir: bin, cniVersion: '1.1.0' })).not.toHaveProperty(
      'cniVersions',
    );
    expect(await buildConflist({ socketPath: '/s', cniBinDir: bin, cniVersion: '0.4.0' })).toMatchObject({
      cniVersion: '0.4.0',
      cniVersions: ['0.4.0', '1.0.0', '1.1.0'],
    });
  });

  it('installs the client executable atomically and says how to build it when missing', async () => {
    const src = join(dir, 'edgemesh-src');
    writeFileSync(src, '#!/bin/sh\necho hi\n');
    chmodSync(src, 0o600);
    const target = join(dir, 'bin', 'edgemesh');
    expect(await installCniClient(target, src)).toBe(true);
    expect(statSync(target).mode & 0o777).toBe(0o755);
    expect(readFileSync(target, 'utf8')).toContain('echo hi');
    expect(await installCniClient(target, src)).toBe(false);
    await expect(installCniClient(target, join(dir, 'missing'))).rejects.toThrow(/npm run build:native/);
  });
});
