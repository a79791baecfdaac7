// The agent image for the container e2e tests: built by the project's own command
// (scripts/image.sh, what `npm run image` runs) under a per-run tag, and removed by the test.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, tryRun } from '../../../common/exec.ts';
import { runPrefix } from '../../../common/netns.ts';
import { REPO_ROOT } from '../../../lab/state.ts';

export interface BuiltImage {
  tag: string;
  buildSeconds: number;
  sizeBytes: number;
  remove(): Promise<void>;
}

export async function buildAgentImage(): Promise<BuiltImage> {
  const tag = `localhost/${runPrefix('emimg')}edgemesh-cni:test`;
  const work = await mkdtemp(join(tmpdir(), 'edgemesh-image-'));
  const t0 = Date.now();
  try {
    await run('bash', [join(REPO_ROOT, 'scripts/image.sh'), '--tag', tag, '--work', work], { timeoutMs: 600_000 });
  } catch (err) {
    await tryRun('podman', ['rmi', '--force', '--ignore', tag]);
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const buildSeconds = (Date.now() - t0) / 1000;
  const sizeBytes = Number((await run('podman', ['image', 'inspect', '--format', '{{.Size}}', tag])).trim());
  return {
    tag,
    buildSeconds,
    sizeBytes,
    remove: async () => {
      await run('podman', ['rmi', '--force', '--ignore', tag]);
    },
  };
}

/** Names of podman containers carrying a label (any state). */
export async function containersLabelled(label: string): Promise<string[]> {
  const out = await run('podman', ['ps', '--all', '--filter', `label=${label}`, '--format', '{{.Names}}']);
  return out.split('\n').filter(Boolean).sort();
}

/** Every image in podman's storage, untagged ones included (a build must leave none behind). */
export async function imageIds(): Promise<string[]> {
  const out = await run('podman', ['images', '--all', '--quiet', '--no-trunc']);
  return [...new Set(out.split('\n').filter(Boolean))].sort();
}
