import { describe, expect, it } from 'vitest';
import {
  deriveSessionKeys,
  generateEphemeral,
  type HandshakeSide,
  SessionKeyError,
} from '../../../overlay/session-keys.ts';

const A = '12D3KooWAAAAexampleA';
const B = '12D3KooWBBBBexampleB';

function exchange(opts: { aId?: string; bId?: string; aIdx?: number; bIdx?: number } = {}) {
  const ea = generateEphemeral();
  const eb = generateEphemeral();
  const initiator: HandshakeSide = { peerId: opts.aId ?? A, ephemeral: ea.publicKey, index: opts.aIdx ?? 11 };
  const responder: HandshakeSide = { peerId: opts.bId ?? B, ephemeral: eb.publicKey, index: opts.bIdx ?? 22 };
  const a = deriveSessionKeys({ ownPrivate: ea.privateKey, initiator, responder, selfIsInitiator: true });
  const b = deriveSessionKeys({ ownPrivate: eb.privateKey, initiator, responder, selfIsInitiator: false });
  return { a, b, ea, eb, initiator, responder };
}

const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');

describe('session key schedule', () => {
  it('gives both sides the same keys, tx and rx swapped, and crossed indexes', () => {
    const { a, b } = exchange();
    expect(a.txKey).toHaveLength(32);
    expect(a.rxKey).toHaveLength(32);
    expect(hex(a.txKey)).toBe(hex(b.rxKey));
    expect(hex(a.rxKey)).toBe(hex(b.txKey));
    expect(hex(a.txKey)).not.toBe(hex(a.rxKey));
    expect([a.localIndex, a.remoteIndex]).toEqual([11, 22]);
    expect([b.localIndex, b.remoteIndex]).toEqual([22, 11]);
  });

  it('gives different keys for fresh ephemerals (every session and rekey is new)', () => {
    const one = exchange();
    const two = exchange();
    expect(hex(one.a.txKey)).not.toBe(hex(two.a.txKey));
    expect(hex(one.a.rxKey)).not.toBe(hex(two.a.rxKey));
  });

  it('binds the peer IDs and indexes: the same ephemerals with another identity give other keys', () => {
    const { ea, eb, initiator, responder, a } = exchange();
    const other = deriveSessionKeys({
      ownPrivate: ea.privateKey,
      initiator,
      responder: { ...responder, peerId: '12D3KooWCCCCexampleC' },
      selfIsInitiator: true,
    });
    expect(hex(other.txKey)).not.toBe(hex(a.txKey));
    const otherIndex = deriveSessionKeys({
      ownPrivate: ea.privateKey,
      initiator,
      responder: { ...responder, index: 23 },
      selfIsInitiator: true,
    });
    expect(hex(otherIndex.txKey)).not.toBe(hex(a.txKey));
    // Swapping the roles changes the transcript too: keys cannot be reflected back.
    const swapped = deriveSessionKeys({
      ownPrivate: eb.privateKey,
      initiator: responder,
      responder: initiator,
      selfIsInitiator: true,
    });
    expect(hex(swapped.txKey)).not.toBe(hex(a.rxKey));
    expect(hex(swapped.txKey)).not.toBe(hex(a.txKey));
  });

  it('refuses bad indexes, a wrong-sized or low-order peer key and a session with itself', () => {
    const e = generateEphemeral();
    const peer = generateEphemeral();
    const base = {
      ownPrivate: e.privateKey,
      initiator: { peerId: A, ephemeral: e.publicKey, index: 1 },
      responder: { peerId: B, ephemeral: peer.publicKey, index: 2 },
      selfIsInitiator: true,
    };
    expect(() => deriveSessionKeys({ ...base, initiator: { ...base.initiator, index: 0 } })).toThrow(SessionKeyError);
    expect(() => deriveSessionKeys({ ...base, responder: { ...base.responder, index: 2 ** 32 } })).toThrow(
      SessionKeyError,
    );
    expect(() =>
      deriveSessionKeys({ ...base, responder: { ...base.responder, ephemeral: new Uint8Array(31) } }),
    ).toThrow(SessionKeyError);
    // The all-zero point has order 1: the shared secret would be zero.
    expect(() =>
      deriveSessionKeys({ ...base, responder: { ...base.responder, ephemeral: new Uint8Array(32) } }),
    ).toThrow(/degenerate|bad ephemeral/);
    expect(() => deriveSessionKeys({ ...base, responder: { ...base.responder, peerId: A } })).toThrow(/two different/);
  });
});
