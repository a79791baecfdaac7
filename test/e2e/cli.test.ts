import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const exec = promisify(execFile);
const cli = new URL('../../bin/edgemesh-cni.js', import.meta.url).pathname;

describe('edgemesh-cni CLI', () => {
  it('prints its version', async () => {
    const { stdout } = await exec(process.execPath, [cli, '--version']);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('prints help that lists its commands', async () => {
    const { stdout } = await exec(process.execPath, [cli, '--help']);
    expect(stdout).toContain('Usage: edgemesh-cni');
  });
});
