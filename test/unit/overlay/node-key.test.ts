import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadOrCreateNodeKey, NodeKeyError } from '../../../overlay/node-key.ts';

describe('node key', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'em-nodekey-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a 0600 Ed25519 key once and reloads the same peer ID', async () => {
    const path = join(dir, 'sub', 'node.key');
    const first = await loadOrCreateNodeKey(path);
    expect(first.created).toBe(true);
    expect(first.privateKey.type).toBe('Ed25519');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const again = await loadOrCreateNodeKey(path);
    expect(again.created).toBe(false);
    expect(again.peerId.toString()).toBe(first.peerId.toString());
  });

  it('refuses a corrupt key file with a clear error instead of replacing it', async () => {
    const path = join(dir, 'node.key');
    await writeFile(path, 'garbage', { mode: 0o600 });
    await expect(loadOrCreateNodeKey(path)).rejects.toThrow(NodeKeyError);
    await expect(loadOrCreateNodeKey(path)).rejects.toThrow(/not a libp2p private key/);
  });

  it('refuses a key readable by others', async () => {
    const path = join(dir, 'node.key');
    await loadOrCreateNodeKey(path);
    await chmod(path, 0o644);
    await expect(loadOrCreateNodeKey(path)).rejects.toThrow(/chmod 600/);
  });
});
