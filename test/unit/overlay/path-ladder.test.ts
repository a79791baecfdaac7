import { describe, expect, it } from 'vitest';
import {
  classifyUdpPath,
  DEFAULT_TUNING,
  holdDownMs,
  initialLadder,
  type LadderState,
  stepLadder,
  type UdpFacts,
  visiblePath,
} from '../../../overlay/path-ladder.ts';

const udp = (confirmedAt: number | undefined, lastRxAt?: number): UdpFacts => ({
  confirmedAt,
  lastRxAt,
  kind: 'udp-punched',
});

describe('path ladder', () => {
  it('starts on the stream and moves to UDP as soon as UDP is confirmed (first time, no hold-down)', () => {
    let s = initialLadder(0);
    s = stepLadder(s, { mode: 'auto', udp: undefined, now: 100 });
    expect(s.carrier).toBe('stream');
    s = stepLadder(s, { mode: 'auto', udp: udp(undefined), now: 200 });
    expect(s.carrier).toBe('stream');
    s = stepLadder(s, { mode: 'auto', udp: udp(300, 300), now: 300 });
    expect(s.carrier).toBe('udp');
    expect(visiblePath(s, udp(300, 300), 'relayed', 400)).toBe('udp-punched');
  });

  it('falls back to the stream when UDP stops answering, and counts the demotion', () => {
    let s: LadderState = { carrier: 'udp', demotedAt: undefined, demotions: 0, since: 0 };
    s = stepLadder(s, { mode: 'auto', udp: udp(0, 1000), now: 1000 + DEFAULT_TUNING.deadAfterMs - 1 });
    expect(s.carrier).toBe('udp');
    const deadAt = 1000 + DEFAULT_TUNING.deadAfterMs;
    s = stepLadder(s, { mode: 'auto', udp: udp(0, 1000), now: deadAt });
    expect(s).toEqual({ carrier: 'stream', demotedAt: deadAt, demotions: 1, since: deadAt });
    expect(visiblePath(s, udp(0, 1000), 'hole-punched', deadAt)).toBe('hole-punched');
  });

  it('after a loss, comes back to UDP only after a fresh confirmation held for the hold-down', () => {
    let s: LadderState = { carrier: 'stream', demotedAt: 10_000, demotions: 1, since: 10_000 };
    // A confirmation older than the loss does not count.
    s = stepLadder(s, { mode: 'auto', udp: udp(9000, 10_500), now: 10_500 });
    expect(s.carrier).toBe('stream');
    // Fresh confirmation at 11 s: hold-down (5 s) runs from then.
    s = stepLadder(s, { mode: 'auto', udp: udp(11_000, 15_000), now: 15_000 });
    expect(s.carrier).toBe('stream');
    s = stepLadder(s, { mode: 'auto', udp: udp(11_000, 16_000), now: 16_000 });
    expect(s.carrier).toBe('udp');
  });

  it('doubles the hold-down with each demotion, capped, and forgets after a stable period', () => {
    expect([0, 1, 2, 3, 4, 5, 10].map((d) => holdDownMs(d))).toEqual([0, 5000, 10_000, 20_000, 40_000, 60_000, 60_000]);
    let s: LadderState = { carrier: 'udp', demotedAt: 0, demotions: 3, since: 0 };
    s = stepLadder(s, { mode: 'auto', udp: udp(0, 59_000), now: 59_000 });
    expect(s.demotions).toBe(3);
    s = stepLadder(s, { mode: 'auto', udp: udp(0, 60_000), now: 60_000 });
    expect(s.demotions).toBe(0);
  });

  it('a flapping UDP path does not bounce traffic: no promotion while it keeps dying', () => {
    let s = initialLadder(0);
    let changes = 0;
    let last = s.carrier;
    // UDP answers for 1 s, then goes silent for 6 s, over and over, for 2 minutes.
    for (let t = 0; t < 120_000; t += 100) {
      const cycle = t % 7000;
      const confirmedAt = t - cycle;
      const lastRxAt = cycle < 1000 ? t : confirmedAt + 1000;
      s = stepLadder(s, { mode: 'auto', udp: udp(confirmedAt, lastRxAt), now: t });
      if (s.carrier !== last) changes++;
      last = s.carrier;
    }
    // One promotion and one demotion at most: the hold-down (5 s) exceeds the 1 s alive window.
    expect(changes).toBeLessThanOrEqual(2);
    expect(s.carrier).toBe('stream');
  });

  it('pinned modes ignore the facts', () => {
    expect(stepLadder(initialLadder(0), { mode: 'udp', udp: undefined, now: 1 }).carrier).toBe('udp');
    const onUdp: LadderState = { carrier: 'udp', demotedAt: undefined, demotions: 0, since: 0 };
    expect(stepLadder(onUdp, { mode: 'stream', udp: udp(0, 1), now: 1 }).carrier).toBe('stream');
    // Pinned to UDP and silent: status says so instead of pretending.
    expect(visiblePath(onUdp, udp(0, 0), 'relayed', 60_000)).toBe('none');
  });

  it('classifies UDP paths: direct when either end is public, punched between two NATs', () => {
    expect(classifyUdpPath(false, true)).toBe('udp-direct');
    expect(classifyUdpPath(true, false)).toBe('udp-direct');
    expect(classifyUdpPath(false, false)).toBe('udp-punched');
  });

  it('skips the hold-down when no stream tunnel is up (nothing to hold traffic on), not the fresh confirmation', () => {
    let s: LadderState = { carrier: 'stream', demotedAt: 10_000, demotions: 1, since: 10_000 };
    s = stepLadder(s, { mode: 'auto', udp: udp(9000, 10_500), now: 10_500, streamUp: false });
    expect(s.carrier).toBe('stream');
    s = stepLadder(s, { mode: 'auto', udp: udp(11_000, 11_000), now: 11_000, streamUp: true });
    expect(s.carrier).toBe('stream');
    s = stepLadder(s, { mode: 'auto', udp: udp(11_000, 11_100), now: 11_100, streamUp: false });
    expect(s.carrier).toBe('udp');
    expect(visiblePath(s, { ...udp(11_000, 11_100), kind: 'udp-relayed' }, 'none', 11_200)).toBe('udp-relayed');
  });
});
