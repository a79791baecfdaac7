// The node's libp2p identity: an Ed25519 key persisted on the host (mode 0600) so the peer
// ID published on the Node object survives agent restarts. Stored in libp2p's protobuf
// encoding, which every libp2p implementation reads.
import { readFile, stat } from 'node:fs/promises';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PeerId, PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { writeFileAtomic } from '../common/atomic-file.ts';

export class NodeKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NodeKeyError';
  }
}

export interface NodeKey {
  privateKey: PrivateKey;
  peerId: PeerId;
  /** True when the key did not exist and was generated now. */
  created: boolean;
}

/** Loads the key at `path`, or creates it (0600, written atomically) when the file is missing. */
export async function loadOrCreateNodeKey(path: string): Promise<NodeKey> {
  let bytes: Buffer | undefined;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new NodeKeyError(`cannot read node key ${path}: ${(err as Error).message}`);
  }
  if (bytes !== undefined) {
    const mode = (await stat(path)).mode & 0o777;
    if (mode & 0o077) {
      throw new NodeKeyError(`node key ${path} is accessible by others (mode ${mode.toString(8)}); chmod 600 it`);
    }
    try {
      const privateKey = privateKeyFromProtobuf(bytes);
      return { privateKey, peerId: peerIdFromPrivateKey(privateKey), created: false };
    } catch (err) {
      throw new NodeKeyError(
        `node key ${path} is not a libp2p private key (${(err as Error).message}); move it away to create a new one`,
      );
    }
  }
  const privateKey = await generateKeyPair('Ed25519');
  await writePrivateFile(path, privateKeyToProtobuf(privateKey));
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey), created: true };
}

// Temporary file + rename (common/atomic-file.ts): a crash mid-write leaves the old state
// (no key), never half a key.
async function writePrivateFile(path: string, data: Uint8Array): Promise<void> {
  try {
    await writeFileAtomic(path, data, 0o600);
  } catch (err) {
    throw new NodeKeyError(`cannot write node key ${path}: ${(err as Error).message}`);
  }
}
