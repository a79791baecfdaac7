// The splice protocol's messages come from other nodes: only the exact shapes pass.
import { streamPair } from '@libp2p/utils';
import { describe, expect, it } from 'vitest';
import {
  FirstMessage,
  OfferAnswer,
  SpliceChannel,
  SpliceGrant,
  SpliceOffer,
} from '../../../overlay/splice-messages.ts';

const token = Buffer.alloc(32, 9).toString('base64');
const peer = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo';

describe('splice messages', () => {
  it('accepts the four messages in their exact shape', () => {
    expect(FirstMessage.parse({ v: 1, op: 'splice', peer })).toEqual({ v: 1, op: 'splice', peer });
    expect(FirstMessage.parse({ v: 1, op: 'offer', peer, token, port: 4004 }).op).toBe('offer');
    expect(SpliceGrant.parse({ v: 1, token, port: 1 }).port).toBe(1);
    expect(OfferAnswer.parse({ v: 1, ok: true })).toEqual({ v: 1, ok: true });
  });

  it.each([
    ['unknown op', { v: 1, op: 'bind', peer }],
    ['wrong version', { v: 2, op: 'splice', peer }],
    ['extra key', { v: 1, op: 'splice', peer, ip: '203.0.113.9' }],
    ['empty peer', { v: 1, op: 'splice', peer: '' }],
    ['long peer', { v: 1, op: 'splice', peer: 'x'.repeat(129) }],
    ['short token', { v: 1, op: 'offer', peer, token: Buffer.alloc(16).toString('base64'), port: 4004 }],
    ['token not text', { v: 1, op: 'offer', peer, token: 7, port: 4004 }],
    ['port 0', { v: 1, op: 'offer', peer, token, port: 0 }],
    ['port too big', { v: 1, op: 'offer', peer, token, port: 65536 }],
    ['port fraction', { v: 1, op: 'offer', peer, token, port: 40.5 }],
    ['null', null],
    ['array', [1, 'splice']],
    ['string', 'splice'],
  ])('refuses %s', (_what, msg) => {
    expect(FirstMessage.safeParse(msg).success).toBe(false);
  });

  it('refuses a grant without a well-formed token or port, and an answer that is not a plain yes', () => {
    expect(SpliceGrant.safeParse({ v: 1, token: 'not base64 of 32 bytes', port: 4004 }).success).toBe(false);
    expect(SpliceGrant.safeParse({ v: 1, token, port: '4004' }).success).toBe(false);
    expect(SpliceOffer.safeParse({ v: 1, op: 'offer', peer, token, port: 4004, extra: 1 }).success).toBe(false);
    expect(OfferAnswer.safeParse({ v: 1, ok: false }).success).toBe(false);
    expect(OfferAnswer.safeParse({ v: 1, ok: 'true' }).success).toBe(false);
  });

  it("turns the other side's refusal into a reason of our own vocabulary, never a label the peer makes up", async () => {
    const reasons: string[] = [];
    for (const error of ['member-full', 'made-up reason #1', 'made-up reason #2']) {
      const [a, b] = await streamPair();
      const reader = new SpliceChannel(a);
      const read = reader.read(SpliceGrant).catch((err: Error & { reason?: string }) => err.reason ?? 'none');
      await new SpliceChannel(b).refuse(error);
      reasons.push(String(await read));
    }
    expect(reasons).toEqual(['refused:member-full', 'refused:other', 'refused:other']);
  });
});
