// Before creating anything the lab says what is missing: root, tools (with the Debian
// package to install), the TUN device, the native build.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { PreflightError, preflight, which } from '../../lab/preflight.ts';
import { withoutPrivileges } from '../support/without-privileges.ts';

const exec = promisify(execFile);
const cli = fileURLToPath(new URL('../../bin/edgemesh-cni.js', import.meta.url));

describe('lab preflight', () => {
  it("refuses to run without root's privileges, before creating anything", async () => {
    const err = await exec(...withoutPrivileges([process.execPath, cli, 'lab', 'up'])).then(
      () => undefined,
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain('must run as root');
    expect(err?.stderr).toContain('lacks CAP_NET_ADMIN and CAP_SYS_ADMIN');
    expect(err?.stderr).not.toMatch(/\n\s+at /); // no stack trace
    // It stopped before the first step: no lab was started, no namespace created.
    expect(err?.stdout).not.toMatch(/namespaces:|lab em/);
  });

  it('names every missing tool with the Debian package that ships it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'em-preflight-'));
    try {
      // A PATH with only `ip` on it.
      await symlink((await which('ip'))!, join(dir, 'ip'));
      const err = await preflight({ searchPath: dir }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(PreflightError);
      const problems = (err as PreflightError).problems;
      expect(problems).toEqual(
        expect.arrayContaining([
          'iptables: not found (apt install iptables)',
          'iptables-restore: not found (apt install iptables)',
          'ping: not found (apt install iputils-ping)',
          'kubectl: not found (apt install kubernetes-client)',
        ]),
      );
      expect(problems.join('\n')).not.toContain('ip: not found');
      await expect(preflight({ searchPath: dir, needTc: true })).rejects.toThrow(
        'tc: not found (apt install iproute2)',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('passes on this machine with the real PATH', async () => {
    await expect(preflight()).resolves.toBeUndefined();
  });
});
