// The entry shim keeps the agent's stripped TypeScript in Node's compile cache, so a start
// after the first does not load the type stripper (bin/edgemesh-cni.js). The agent is
// started with a config that does not exist: it loads its modules, then exits with 2.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../../../bin/edgemesh-cni.js');
const dirs: string[] = [];

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Runs the CLI with its own temporary directory; returns stderr (with the cache's debug lines). */
function runCli(tmp: string, args: string[]): { status: number | null; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' };
  delete env.NODE_COMPILE_CACHE;
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
    maxBuffer: 256 * 1024 * 1024,
  });
  return { status: r.status, stderr: r.stderr };
}

function cacheFiles(tmp: string): string[] {
  try {
    return readdirSync(join(tmp, 'node-compile-cache'), { recursive: true }) as string[];
  } catch {
    return [];
  }
}

describe('the agent compile cache', () => {
  it('is written by the first agent start and spares the next one the type stripper', { timeout: 60_000 }, () => {
    const tmp = mkdtempSync(join(tmpdir(), 'em-compile-cache-'));
    dirs.push(tmp);
    const args = ['agent', '--config', join(tmp, 'missing.yaml')];
    const first = runCli(tmp, args);
    expect(first.status).toBe(2);
    expect(first.stderr).toContain('invalid agent config');
    expect(first.stderr).toMatch(/saving transpilation cache for StrippedTypeScript .*\/agent\/config\.ts/);
    expect(cacheFiles(tmp).length).toBeGreaterThan(10);

    const second = runCli(tmp, args);
    expect(second.status).toBe(2);
    expect(second.stderr).toMatch(
      /retrieving transpile cache for StrippedTypeScript .*\/agent\/config\.ts\.\.\.success/,
    );
    expect(second.stderr).not.toMatch(/no transpile cache for StrippedTypeScript/);
  });

  it('is left alone by other commands', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'em-compile-cache-'));
    dirs.push(tmp);
    const r = runCli(tmp, ['--version']);
    expect(r.status).toBe(0);
    expect(cacheFiles(tmp)).toEqual([]);
  });
});
