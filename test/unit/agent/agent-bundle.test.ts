// The agent as deployed runs from its bundle (bin/agent-bundle.js, scripts/build-agent.mjs):
// only while the bundle is what its sources would build now, built with the same module
// routing as the agent's loader, ASCII only, without the lab's and the benchmarks' code.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT_BUNDLE_PATH,
  AGENT_MANIFEST_PATH,
  type AgentManifest,
  agentBundleStaleness,
  agentManifest,
  restampAgentManifest,
} from '../../../bin/agent-bundle.js';

const ROOT = join(import.meta.dirname, '../../..');
const CLI = join(ROOT, 'bin/edgemesh-cni.js');
const BUILD = join(ROOT, 'scripts/build-agent.mjs');
const dirs: string[] = [];

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'em-agent-bundle-'));
  dirs.push(dir);
  return dir;
}

describe('whether the bundle is current', () => {
  /** A root with a bundle built from two inputs, and its manifest. */
  function builtRoot(): string {
    const root = tempDir();
    mkdirSync(join(root, 'build'));
    mkdirSync(join(root, 'agent'));
    writeFileSync(join(root, 'agent/run.ts'), 'export const a = 1;\n');
    writeFileSync(join(root, 'agent/config.ts'), 'export const b = 2;\n');
    writeFileSync(join(root, AGENT_BUNDLE_PATH), 'export const a = 1, b = 2;\n');
    const manifest = agentManifest(root, ['agent/run.ts', 'agent/config.ts']);
    writeFileSync(join(root, AGENT_MANIFEST_PATH), JSON.stringify(manifest));
    return root;
  }

  it('is current as built', () => {
    expect(agentBundleStaleness(builtRoot())).toBeUndefined();
  });

  it('is not, without a manifest, or with one that is not', () => {
    const root = builtRoot();
    writeFileSync(join(root, AGENT_MANIFEST_PATH), '{"bundle": 3}');
    expect(agentBundleStaleness(root)).toBe(`${AGENT_MANIFEST_PATH} is not a manifest`);
    writeFileSync(join(root, AGENT_MANIFEST_PATH), '{"bund');
    expect(agentBundleStaleness(root)).toBe(`${AGENT_MANIFEST_PATH} is unreadable`);
    rmSync(join(root, AGENT_MANIFEST_PATH));
    expect(agentBundleStaleness(root)).toBe(`${AGENT_MANIFEST_PATH} is missing`);
  });

  it('is not once a source changed: its size, its time, or gone', () => {
    const edited = builtRoot();
    writeFileSync(join(edited, 'agent/config.ts'), 'export const b = 3_000;\n');
    expect(agentBundleStaleness(edited)).toBe(`agent/config.ts changed since ${AGENT_BUNDLE_PATH} was built`);
    const touched = builtRoot();
    const later = new Date(statSync(join(touched, 'agent/run.ts')).mtimeMs + 1000);
    utimesSync(join(touched, 'agent/run.ts'), later, later);
    expect(agentBundleStaleness(touched)).toBe(`agent/run.ts changed since ${AGENT_BUNDLE_PATH} was built`);
    const removed = builtRoot();
    rmSync(join(removed, 'agent/run.ts'));
    expect(agentBundleStaleness(removed)).toBe(`agent/run.ts changed since ${AGENT_BUNDLE_PATH} was built`);
  });

  it('is not once the bundle itself was replaced', () => {
    const root = builtRoot();
    writeFileSync(join(root, AGENT_BUNDLE_PATH), 'export const a = 1, b = 2, c = 3;\n');
    expect(agentBundleStaleness(root)).toBe(`${AGENT_BUNDLE_PATH} is not the one its manifest describes`);
  });

  it('is current again once stamped with the times a copy gave its files, not when a file differs', () => {
    const root = builtRoot();
    const copied = new Date(1_700_000_000_000);
    for (const file of [AGENT_BUNDLE_PATH, 'agent/run.ts', 'agent/config.ts'])
      utimesSync(join(root, file), copied, copied);
    expect(agentBundleStaleness(root)).toBe(`${AGENT_BUNDLE_PATH} is not the one its manifest describes`);
    restampAgentManifest(root);
    expect(agentBundleStaleness(root)).toBeUndefined();
    writeFileSync(join(root, 'agent/run.ts'), 'export const a = 10;\n');
    expect(() => restampAgentManifest(root)).toThrow(/agent\/run.ts is not the file the bundle was built from/);
  });

  it('refuses to describe a build whose input went missing', () => {
    const root = builtRoot();
    expect(() => agentManifest(root, ['agent/run.ts', 'agent/gone.ts'])).toThrow(/agent\/gone.ts: read by the build/);
  });
});

describe('the build', () => {
  it('bundles the agent alone, routed as its loader routes it, ASCII only, and builds again only when stale', {
    timeout: 120_000,
  }, () => {
    const out = tempDir();
    const build = (...args: string[]) =>
      spawnSync(process.execPath, [BUILD, '--out-dir', out, ...args], { encoding: 'utf8', timeout: 120_000 });
    const first = build();
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/agent\.js: [\d.]+ MB from \d+ files/);
    const bundle = readFileSync(join(out, 'agent.js'));
    expect(bundle.every((byte) => byte < 0x80)).toBe(true);
    const manifestPath = relative(ROOT, join(out, 'agent.inputs.json'));
    expect(agentBundleStaleness(ROOT, manifestPath)).toBeUndefined();

    const inputs = Object.keys(
      (JSON.parse(readFileSync(join(out, 'agent.inputs.json'), 'utf8')) as AgentManifest).inputs,
    );
    expect(inputs).toContain('agent/run.ts');
    expect(inputs).toContain('scripts/build-agent.mjs');
    expect(inputs.filter((i) => i.startsWith('lab/') || i.startsWith('bench/'))).toEqual([]);
    // client-node's generated API index is routed to the slim one, as at run time.
    expect(inputs).toContain('common/kube/slim/gen.ts');
    expect(inputs).not.toContain('node_modules/@kubernetes/client-node/dist/gen/index.js');
    expect(inputs.filter((i) => i.includes('zod/v4/locales/'))).toEqual(['node_modules/zod/v4/locales/en.js']);

    const mtime = statSync(join(out, 'agent.js')).mtimeMs;
    const again = build('--if-stale');
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toBe('');
    expect(statSync(join(out, 'agent.js')).mtimeMs).toBe(mtime);
  });
});

describe('the entry shim', () => {
  beforeAll(() => {
    const r = spawnSync(process.execPath, [BUILD, '--if-stale'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
  }, 120_000);

  /** Runs `edgemesh-cni agent` with a config that does not exist; reports the files Node resolved to load. */
  function agentWithoutConfig(env: NodeJS.ProcessEnv) {
    const dir = tempDir();
    const trace = join(dir, 'trace.mjs');
    writeFileSync(
      trace,
      `import { registerHooks } from 'node:module';
       registerHooks({ resolve(specifier, context, next) {
         const resolved = next(specifier, context);
         if (resolved.url.startsWith('file:')) process.stderr.write('loaded ' + resolved.url + '\\n');
         return resolved;
       } });`,
    );
    const r = spawnSync(process.execPath, [CLI, 'agent', '--config', join(dir, 'missing.yaml')], {
      env: { ...process.env, ...env, NODE_OPTIONS: `--import=${trace}` },
      encoding: 'utf8',
      timeout: 60_000,
    });
    const loaded = r.stderr.split('\n').filter((l) => l.startsWith('loaded '));
    return { status: r.status, stderr: r.stderr, loaded };
  }

  it('runs the agent from its bundle while it is current', { timeout: 60_000 }, () => {
    const r = agentWithoutConfig({});
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain('invalid agent config');
    expect(r.stderr).not.toContain('runs from its sources');
    expect(r.loaded).toContain(`loaded file://${join(ROOT, AGENT_BUNDLE_PATH)}`);
    expect(r.loaded.filter((l) => l.endsWith('.ts'))).toEqual([]);
  });

  it('runs it from its sources when asked to', { timeout: 60_000 }, () => {
    const r = agentWithoutConfig({ EDGEMESH_AGENT_FROM_SOURCES: '1' });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain('invalid agent config');
    expect(r.loaded).toContain(`loaded file://${join(ROOT, 'agent/config.ts')}`);
    expect(r.loaded.some((l) => l.endsWith(AGENT_BUNDLE_PATH))).toBe(false);
  });
});
