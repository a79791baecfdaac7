// The NAT matrix's arithmetic: which paths count as direct, the kind pairs it runs, and the
// per-pair summary (success rate, percentiles over the pairs that went direct).
import { describe, expect, it } from 'vitest';
import { type ComboResult, kindPairs, summarise } from '../../../bench/nat-matrix.ts';
import { isDirect, type PairResult } from '../../../lab/time-to-direct.ts';

const pair = (msToDirect: number | null, finalPath: PairResult['finalPath']): PairResult => ({
  from: 'edge-a-1',
  to: 'edge-b-1',
  finalPath,
  timeline: [],
  msToDirect,
  msToFirstReply: 100,
});

describe('nat matrix', () => {
  it('counts a path as direct unless a relay carries it or there is none', () => {
    expect(['direct', 'hole-punched', 'host-gw'].map((p) => isDirect(p as PairResult['finalPath']))).toEqual([
      true,
      true,
      true,
    ]);
    expect(['relayed', 'none', 'unknown'].map((p) => isDirect(p as PairResult['finalPath']))).toEqual([
      false,
      false,
      false,
    ]);
  });

  it('runs every unordered pair of kinds, each kind with itself', () => {
    expect(kindPairs(['masquerade', 'remap', 'symmetric'])).toEqual([
      ['masquerade', 'masquerade'],
      ['masquerade', 'remap'],
      ['masquerade', 'symmetric'],
      ['remap', 'remap'],
      ['remap', 'symmetric'],
      ['symmetric', 'symmetric'],
    ]);
    expect(kindPairs(['masquerade', 'remap', 'symmetric', 'udp-blocked'])).toHaveLength(10);
  });

  it('summarises trials per NAT pair: rate over all pairs, percentiles over the direct ones', () => {
    const results: ComboResult[] = [
      {
        natA: 'masquerade',
        natB: 'remap',
        trial: 1,
        labUpSeconds: 9,
        pairs: [pair(1000, 'hole-punched'), pair(null, 'relayed')],
      },
      {
        natA: 'masquerade',
        natB: 'remap',
        trial: 2,
        labUpSeconds: 9,
        pairs: [pair(3000, 'hole-punched'), pair(2000, 'hole-punched')],
      },
      { natA: 'symmetric', natB: 'symmetric', trial: 1, labUpSeconds: 0, error: 'lab up failed', pairs: [] },
    ];
    const [mr, ss] = summarise(results);
    expect(mr).toMatchObject({
      natA: 'masquerade',
      natB: 'remap',
      pairs: 4,
      direct: 3,
      successRate: 0.75,
      p50MsToDirect: 2000,
      finalPaths: { 'hole-punched': 3, relayed: 1 },
      errors: 0,
    });
    expect(mr!.p99MsToDirect).toBeCloseTo(2980);
    expect(ss).toMatchObject({ pairs: 0, direct: 0, errors: 1 });
    expect(ss!.successRate).toBeNaN();
    expect(ss!.p50MsToDirect).toBeNaN();
  });
});
