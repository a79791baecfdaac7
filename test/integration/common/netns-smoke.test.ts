import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { run, tryRun } from '../../../common/exec.ts';

describe('network namespaces (smoke)', () => {
  const name = `emtest-smoke-${randomBytes(3).toString('hex')}`;
  afterEach(async () => {
    await tryRun('ip', ['netns', 'del', name]);
  });

  it('creates a namespace, brings lo up inside it, and deletes it', async () => {
    await run('ip', ['netns', 'add', name]);
    expect(await run('ip', ['netns', 'list'])).toContain(name);
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    const out = await run('ip', ['-n', name, '-o', 'addr', 'show', 'dev', 'lo']);
    expect(out).toContain('127.0.0.1/8');
    await run('ip', ['netns', 'del', name]);
    expect(await run('ip', ['netns', 'list'])).not.toContain(name);
  });
});
