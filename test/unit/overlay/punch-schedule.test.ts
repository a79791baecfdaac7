import { describe, expect, it } from 'vitest';
import { PunchGuard, punchRetryDelayMs } from '../../../overlay/punch-schedule.ts';

describe('punch retries', () => {
  it('start at 1 s and double up to a cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => punchRetryDelayMs(n))).toEqual([
      1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000,
    ]);
    expect(punchRetryDelayMs(0)).toBe(0);
    expect(punchRetryDelayMs(10_000)).toBe(60_000);
  });
});

describe('punch guard (responder admission)', () => {
  const limits = { perPeer: 3, windowMs: 60_000, concurrent: 2 };

  it('runs one punch per peer at a time', () => {
    const g = new PunchGuard(limits);
    expect(g.admit('p1', 0)).toEqual({ ok: true });
    expect(g.admit('p1', 10)).toEqual({ ok: false, reason: 'busy' });
    g.release('p1');
    expect(g.admit('p1', 20)).toEqual({ ok: true });
  });

  it('rate-limits a peer within the window and forgets after it', () => {
    const g = new PunchGuard(limits);
    for (const t of [0, 1000, 2000]) {
      expect(g.admit('p1', t).ok).toBe(true);
      g.release('p1');
    }
    expect(g.admit('p1', 3000)).toEqual({ ok: false, reason: 'rate-limited' });
    expect(g.admit('p2', 3000).ok).toBe(true); // other peers are not affected
    g.release('p2');
    expect(g.admit('p1', 60_001).ok).toBe(true);
  });

  it('caps concurrent punches over all peers', () => {
    const g = new PunchGuard(limits);
    expect(g.admit('a', 0).ok).toBe(true);
    expect(g.admit('b', 0).ok).toBe(true);
    expect(g.admit('c', 0)).toEqual({ ok: false, reason: 'too-many-punches' });
    g.release('a');
    expect(g.admit('c', 0).ok).toBe(true);
    expect(g.running()).toBe(2);
  });
});
