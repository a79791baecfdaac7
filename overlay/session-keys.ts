// The key schedule of a UDP data session. Both ends draw an ephemeral X25519 key pair and
// exchange the public halves over their libp2p connection, whose noise channel already
// authenticates both peer IDs. Both peer IDs, both ephemeral keys and both receiver indexes
// go into the HKDF salt, so the keys belong to exactly this pair of nodes and this exchange:
// a key can never be replayed into another session or another peer pair. Fresh ephemerals
// per session give forward secrecy (the node keys never touch the data keys).
import {
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  timingSafeEqual,
} from 'node:crypto';

export const X25519_KEY_BYTES = 32;
export const SESSION_KEY_BYTES = 32;
const LABEL = 'edgemesh session v1';

export class SessionKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionKeyError';
  }
}

export interface EphemeralKey {
  privateKey: KeyObject;
  /** Raw 32-byte public key, as sent to the peer. */
  publicKey: Uint8Array;
}

export function generateEphemeral(): EphemeralKey {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const jwk = publicKey.export({ format: 'jwk' });
  return { privateKey, publicKey: new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url')) };
}

function importPublic(raw: Uint8Array): KeyObject {
  if (raw.length !== X25519_KEY_BYTES) throw new SessionKeyError(`ephemeral key must be ${X25519_KEY_BYTES} bytes`);
  try {
    return createPublicKey({
      key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(raw).toString('base64url') },
      format: 'jwk',
    });
  } catch (err) {
    throw new SessionKeyError(`bad ephemeral key: ${(err as Error).message}`);
  }
}

/** One side's contribution to a handshake. */
export interface HandshakeSide {
  peerId: string;
  ephemeral: Uint8Array;
  /** The receiver index this side chose (the other side puts it in datagrams to it). */
  index: number;
}

export interface DerivedKeys {
  localIndex: number;
  remoteIndex: number;
  txKey: Uint8Array;
  rxKey: Uint8Array;
}

/**
 * Derives this side's session keys. `initiator` and `responder` describe the exchange the
 * same way on both ends; `selfIsInitiator` picks which direction we transmit in. Both ends
 * get the same two keys with tx and rx swapped.
 */
export function deriveSessionKeys(args: {
  ownPrivate: KeyObject;
  initiator: HandshakeSide;
  responder: HandshakeSide;
  selfIsInitiator: boolean;
}): DerivedKeys {
  const { initiator, responder, selfIsInitiator } = args;
  for (const side of [initiator, responder]) {
    if (!isIndex(side.index)) throw new SessionKeyError(`receiver index ${side.index} is not a non-zero u32`);
  }
  if (initiator.peerId === responder.peerId) throw new SessionKeyError('a session needs two different peers');
  const peerEphemeral = selfIsInitiator ? responder.ephemeral : initiator.ephemeral;
  const peerKey = importPublic(peerEphemeral);
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: args.ownPrivate, publicKey: peerKey });
  } catch (err) {
    // OpenSSL refuses a low-order point itself ("failed during derivation").
    throw new SessionKeyError(`degenerate shared secret: ${(err as Error).message}`);
  }
  // A low-order peer key makes the shared secret all zeros (RFC 7748 §6.1): refuse it.
  if (timingSafeEqual(shared, Buffer.alloc(shared.length))) throw new SessionKeyError('degenerate shared secret');
  const salt = transcriptHash(initiator, responder);
  const okm = new Uint8Array(hkdfSync('sha256', shared, salt, LABEL, 2 * SESSION_KEY_BYTES));
  const initiatorToResponder = okm.slice(0, SESSION_KEY_BYTES);
  const responderToInitiator = okm.slice(SESSION_KEY_BYTES);
  return selfIsInitiator
    ? {
        localIndex: initiator.index,
        remoteIndex: responder.index,
        txKey: initiatorToResponder,
        rxKey: responderToInitiator,
      }
    : {
        localIndex: responder.index,
        remoteIndex: initiator.index,
        txKey: responderToInitiator,
        rxKey: initiatorToResponder,
      };
}

/** SHA-256 over the label and both sides' peer ID, ephemeral key and index, length-framed. */
export function transcriptHash(initiator: HandshakeSide, responder: HandshakeSide): Buffer {
  const h = createHash('sha256');
  const field = (bytes: Uint8Array) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    h.update(len);
    h.update(bytes);
  };
  field(Buffer.from(LABEL));
  for (const side of [initiator, responder]) {
    field(Buffer.from(side.peerId, 'utf8'));
    field(side.ephemeral);
    const idx = Buffer.alloc(4);
    idx.writeUInt32BE(side.index);
    field(idx);
  }
  return h.digest();
}

export function isIndex(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n > 0 && n <= 0xffff_ffff;
}
