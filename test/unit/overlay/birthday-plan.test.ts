// The pure planning of birthday punching: who sprays, the attempt schedule, the budget,
// the spray's ports and the node-wide rate bound.
import { describe, expect, it } from 'vitest';
import {
  attemptBudget,
  attemptStart,
  BIRTHDAY_TUNING,
  birthdayRole,
  bothHard,
  distinctPorts,
  missProbability,
  ProbeBucket,
  SPRAY_PORT_MAX,
  SPRAY_PORT_MIN,
  sprayDue,
} from '../../../overlay/birthday-plan.ts';
import { NAT_KINDS } from '../../../overlay/nat-kind.ts';

describe('birthdayRole', () => {
  it('the endpoint-dependent side opens sockets, the endpoint-independent side sprays; nothing else punches by birthday', () => {
    expect(birthdayRole('endpoint-dependent', 'endpoint-independent')).toBe('hard');
    expect(birthdayRole('endpoint-independent', 'endpoint-dependent')).toBe('easy');
    for (const a of [...NAT_KINDS, undefined])
      for (const b of [...NAT_KINDS, undefined]) {
        const role = birthdayRole(a, b);
        // The two sides, computing from the same pair, always take opposite roles or none.
        const other = birthdayRole(b, a);
        if (role === undefined) expect(other).toBeUndefined();
        else expect(other).toBe(role === 'hard' ? 'easy' : 'hard');
        if (a === 'none' || b === 'none' || a === undefined || b === undefined || a === 'unknown' || b === 'unknown')
          expect(role).toBeUndefined();
      }
  });

  it('both endpoint-dependent: no birthday (the relay carries the pair)', () => {
    expect(birthdayRole('endpoint-dependent', 'endpoint-dependent')).toBeUndefined();
    expect(bothHard('endpoint-dependent', 'endpoint-dependent')).toBe(true);
    expect(bothHard('endpoint-dependent', 'endpoint-independent')).toBe(false);
  });
});

describe('attempt schedule and budget', () => {
  it('retries with a doubling pause, a bounded number of times', () => {
    const t = { ...BIRTHDAY_TUNING, attemptMs: 5000, backoffMs: 5000, maxBackoffMs: 12_000, maxAttempts: 4 };
    expect([0, 1, 2, 3, 4].map((k) => attemptStart(k, t))).toEqual([0, 10_000, 25_000, 42_000, undefined]);
    expect(attemptStart(-1, t)).toBeUndefined();
  });

  it('sprays at the configured rate after the delay, never past the budget', () => {
    const t = BIRTHDAY_TUNING;
    expect(sprayDue(t.sprayDelayMs - 1)).toBe(0);
    expect(sprayDue(t.sprayDelayMs)).toBe(1);
    expect(sprayDue(t.sprayDelayMs + 1000)).toBe(t.sprayPerSecond + 1);
    expect(sprayDue(t.attemptMs)).toBe(t.sprayBudget);
    expect(attemptBudget('easy', 1)).toBe(t.sprayBudget);
    expect(attemptBudget('hard', 2)).toBe(t.hardSockets * t.hardRounds * 2);
  });

  it('the default tuning misses less than 0.1 % of attempts, and stays under 1000 probes/s', () => {
    const t = BIRTHDAY_TUNING;
    const miss = missProbability(t.hardSockets, t.sprayBudget);
    expect(miss).toBeLessThan(0.001);
    expect(miss).toBeGreaterThan(0);
    expect(missProbability(t.hardSockets, 0)).toBe(1);
    expect(missProbability(10, 100, 100)).toBe(0);
    expect(t.ratePerSecond).toBeLessThanOrEqual(1000);
    expect(t.sprayPerSecond).toBeLessThanOrEqual(t.ratePerSecond);
  });
});

describe('distinctPorts', () => {
  it('draws distinct ports in the NAT range', () => {
    const ports = distinctPorts(2000);
    expect(ports).toHaveLength(2000);
    expect(new Set(ports).size).toBe(2000);
    expect(ports.every((p) => p >= SPRAY_PORT_MIN && p <= SPRAY_PORT_MAX)).toBe(true);
  });

  it('covers a small range exactly once, and no more than it holds', () => {
    expect(distinctPorts(10, 100, 109).sort((a, b) => a - b)).toEqual([
      100, 101, 102, 103, 104, 105, 106, 107, 108, 109,
    ]);
    expect(distinctPorts(50, 100, 109)).toHaveLength(10);
    expect(distinctPorts(0)).toEqual([]);
  });
});

describe('ProbeBucket', () => {
  it('never gives more than the burst at once nor more than the rate over time', () => {
    const b = new ProbeBucket(1000, 300, 0);
    expect(b.take(1000, 0)).toBe(300);
    expect(b.take(1, 0)).toBe(0);
    let got = 0;
    for (let t = 100; t <= 10_000; t += 100) got += b.take(1000, t);
    // 10 s at 1000/s (nothing saved up: every tick drains it)
    expect(got).toBe(10_000);
    expect(b.take(50, 10_020)).toBe(20);
  });
});
