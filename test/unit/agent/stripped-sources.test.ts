// The agent's module loading (bin/agent-loader.js): its TypeScript comes stripped from a
// cache on disk, so a start after the first loads neither Node's type stripper nor its
// compile cache, ESM imports of node:http do not load Node's bundled undici, and zod loads
// its English locale alone. Each case
// runs in a child process: the hooks are process-wide.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../../..');
const CLI = join(ROOT, 'bin/edgemesh-cni.js');
const LOADER = join(ROOT, 'bin/agent-loader.js');
const dirs: string[] = [];

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'em-stripped-sources-'));
  dirs.push(dir);
  return dir;
}

function cleanEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_COMPILE_CACHE;
  return env;
}

/** Loads the agent's config module and the Kubernetes client through the agent's loader; reports what Node loaded. */
function loadAgentModules(cache: string): {
  amaro: boolean;
  undici: boolean;
  counts: Record<string, number>;
  zodLocales: string[];
  zodMessage: string;
} {
  const script = `
    const { strippedSourceCounts } = await import(${JSON.stringify(join(ROOT, 'bin/stripped-sources.js'))});
    await import(${JSON.stringify(join(ROOT, 'agent/config.ts'))});
    await import(${JSON.stringify(join(ROOT, 'common/kube/client.ts'))});
    const loaded = process.moduleLoadList;
    const { z } = await import('zod');
    const zodMessage = z.string().safeParse(1).error.issues[0].message;
    console.log(JSON.stringify({
      zodLocales: Object.keys(z.locales),
      zodMessage,
      amaro: loaded.some((m) => m.includes('deps/amaro')),
      undici: loaded.some((m) => m.includes('deps/undici/undici')),
      counts: strippedSourceCounts,
    }));`;
  const r = spawnSync(process.execPath, ['--import', LOADER, '--input-type=module', '-e', script], {
    env: cleanEnv({ EDGEMESH_SOURCE_CACHE: cache }),
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}

describe("the agent's module loading", () => {
  it('strips once, and a later start finds every module stripped without loading the stripper', {
    timeout: 120_000,
  }, () => {
    const cache = join(tempDir(), 'cache');
    const first = loadAgentModules(cache);
    expect(first.amaro).toBe(true);
    expect(first.counts.stripped).toBeGreaterThan(5);
    const entries = readdirSync(join(cache, process.version));
    expect(entries.length).toBe(first.counts.stripped);

    const second = loadAgentModules(cache);
    expect(second.amaro).toBe(false);
    expect(second.counts).toEqual({ hits: first.counts.stripped, stripped: 0, unwritable: 0 });
    expect(readdirSync(join(cache, process.version)).sort()).toEqual(entries.sort());
  });

  it('refuses a cache directory that others can write to: Node strips the sources itself', { timeout: 60_000 }, () => {
    const cache = join(tempDir(), 'cache');
    mkdirSync(cache);
    chmodSync(cache, 0o777); // as if anyone could have planted a module in it
    const loaded = loadAgentModules(cache);
    expect(loaded.counts).toEqual({ hits: 0, stripped: 0, unwritable: 0 });
    expect(loaded.amaro).toBe(true);
    expect(existsSync(join(cache, process.version))).toBe(true); // made, then found not private
    expect(readdirSync(join(cache, process.version))).toEqual([]);
  });

  it("imports node:http from ES modules without Node's bundled undici", { timeout: 60_000 }, () => {
    const cache = join(tempDir(), 'cache');
    // client-node's KubeConfig and Watch import node:http; so does agent-base under them.
    expect(loadAgentModules(cache).undici).toBe(false);
  });

  it("loads zod's English locale alone, and its messages stay English", { timeout: 60_000 }, () => {
    const cache = join(tempDir(), 'cache');
    const loaded = loadAgentModules(cache);
    expect(loaded.zodLocales).toEqual(['en']);
    expect(loaded.zodMessage).toBe('Invalid input: expected string, received number');
  });

  it('prunes entries no start has used for a week, keeps recent and used ones', { timeout: 60_000 }, () => {
    const cache = join(tempDir(), 'cache');
    loadAgentModules(cache);
    const dir = join(cache, process.version);
    const used = readdirSync(dir);
    const old = new Date(Date.now() - 8 * 24 * 3600 * 1000);
    for (const name of used) utimesSync(join(dir, name), old, old);
    writeFileSync(join(dir, 'stale.js'), '');
    utimesSync(join(dir, 'stale.js'), old, old);
    writeFileSync(join(dir, 'recent.js'), '');
    const script = `
      const { pruneStrippedSources } = await import(${JSON.stringify(join(ROOT, 'bin/stripped-sources.js'))});
      await import(${JSON.stringify(join(ROOT, 'agent/config.ts'))});
      await import(${JSON.stringify(join(ROOT, 'common/kube/client.ts'))});
      console.log(pruneStrippedSources());`;
    const r = spawnSync(process.execPath, ['--import', LOADER, '--input-type=module', '-e', script], {
      env: cleanEnv({ EDGEMESH_SOURCE_CACHE: cache }),
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('1');
    expect(existsSync(join(dir, 'stale.js'))).toBe(false);
    expect(existsSync(join(dir, 'recent.js'))).toBe(true);
    for (const name of used) expect(existsSync(join(dir, name))).toBe(true);
  });

  it('runs the agent command through it (from its sources), and leaves other commands alone', {
    timeout: 60_000,
  }, () => {
    const tmp = tempDir();
    const cache = join(tmp, 'cache');
    mkdirSync(join(tmp, 'tmp'));
    const run = (args: string[]) =>
      spawnSync(process.execPath, [CLI, ...args], {
        // The agent from its sources: its bundle (bin/agent-bundle.js) strips nothing.
        env: cleanEnv({ TMPDIR: join(tmp, 'tmp'), EDGEMESH_SOURCE_CACHE: cache, EDGEMESH_AGENT_FROM_SOURCES: '1' }),
        encoding: 'utf8',
        timeout: 60_000,
      });
    expect(run(['--version']).status).toBe(0);
    expect(existsSync(cache)).toBe(false);
    // A config that does not exist: the agent loads its modules, then exits with 2.
    const agent = run(['agent', '--config', join(tmp, 'missing.yaml')]);
    expect(agent.status).toBe(2);
    expect(agent.stderr).toContain('invalid agent config');
    expect(readdirSync(join(cache, process.version)).length).toBeGreaterThan(5);
  });
});
