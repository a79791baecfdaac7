import { describe, expect, it } from 'vitest';
import { parseSessionAnswer, parseSessionHello, SessionProtocolError } from '../../../overlay/session-protocol.ts';

const key = Buffer.alloc(32, 7).toString('base64');
const hello = { v: 1, t: 'hello', eph: key, idx: 42, cipher: 'aes-256-gcm', eps: [{ ip: '203.0.113.5', port: 23456 }] };

describe('session protocol messages', () => {
  it('reads a hello, with or without the optional NAT kind', () => {
    expect(parseSessionHello(hello)).toMatchObject({
      index: 42,
      cipher: 'aes-256-gcm',
      endpoints: [{ ip: '203.0.113.5', port: 23456 }],
    });
    expect(parseSessionHello({ ...hello, nat: 'endpoint-dependent' }).nat).toBe('endpoint-dependent');
  });

  it('ignores fields a newer peer adds, so a rolling upgrade keeps sessions', () => {
    const offer = parseSessionHello({ ...hello, someFutureField: { x: 1 } });
    expect(offer.index).toBe(42);
    expect(offer).not.toHaveProperty('someFutureField');
    const answer = parseSessionAnswer({ ...hello, t: 'accept', another: 'x' });
    expect(answer.accepted).toBe(true);
    expect(parseSessionAnswer({ v: 1, t: 'reject', reason: 'busy', extra: 1 })).toEqual({
      accepted: false,
      reason: 'busy',
    });
  });

  it('still refuses what it knows to be wrong', () => {
    for (const bad of [
      { ...hello, v: 2 },
      { ...hello, idx: 0 },
      { ...hello, eph: 'short' },
      { ...hello, nat: 'not-a-kind' },
      { ...hello, eps: [{ ip: '127.0.0.1', port: 1 }] },
      null,
      'hello',
    ]) {
      expect(() => parseSessionHello(bad)).toThrow(SessionProtocolError);
    }
  });
});
