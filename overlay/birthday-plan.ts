// Birthday punching through one endpoint-dependent NAT, the pure part: who does what, how
// much, and when. The "hard" side sits behind an endpoint-dependent NAT (a new random public
// port per destination, overlay/nat-kind.ts); the "easy" side behind an endpoint-independent
// one (its mapping is known: it is what reflectors saw). The hard side opens many sockets and
// sends one probe from each to the easy side's mapping: each gets its own random port at its
// NAT, which now lets the easy side's endpoint in on that port. The easy side sprays probes
// from its data socket to random ports of the hard side's public IP: one that lands on any of
// those ports passes the hard NAT (it is the answer that mapping waits for) and reaches the
// socket behind it; the easy NAT let the answer back in because that probe went out first.
// With m mappings, n distinct probed ports and r ports in the range the miss chance is about
// (1 - m/r)^n: 256 mappings and 2000 probes over 64 512 ports miss 0.04 % of the time.
// Both sides hard: neither mapping is known, the square of the range is out of reach: no
// birthday at all (the UDP relay carries the pair), so no probe storm either.
import { randomInt } from 'node:crypto';
import type { NatKind } from './nat-kind.ts';

export type BirthdayRole = 'hard' | 'easy';

export interface BirthdayTuning {
  /** Sockets the hard side opens per attempt (one NAT mapping each). */
  hardSockets: number;
  /** Probe rounds from every hard socket per attempt (the second one covers a lost first). */
  hardRounds: number;
  hardRoundMs: number;
  /** The easy side starts spraying this long after the attempt starts (the hard mappings form first). */
  sprayDelayMs: number;
  /** Probes the easy side sprays per attempt, at most. */
  sprayBudget: number;
  /** Spray rate, probes per second. */
  sprayPerSecond: number;
  /** An attempt without a hit ends after this long (its sockets are closed). */
  attemptMs: number;
  /** Pause after the first failed attempt, doubled after each further one, up to maxBackoffMs. */
  backoffMs: number;
  maxBackoffMs: number;
  /** Attempts per session; a new session (rekey) starts the series again. */
  maxAttempts: number;
  /** Node-wide bound on birthday probes (both roles, all peers): a token bucket. */
  ratePerSecond: number;
  burst: number;
  /** A socket that heard the peer stays open this long for the path to be adopted. */
  heardKeepMs: number;
  /** Hard-side attempts running at once over all peers (each holds hardSockets sockets); more wait. */
  maxConcurrentHard: number;
}

export const BIRTHDAY_TUNING: BirthdayTuning = {
  hardSockets: 256,
  hardRounds: 2,
  hardRoundMs: 1000,
  sprayDelayMs: 300,
  sprayBudget: 2000,
  sprayPerSecond: 1000,
  attemptMs: 5000,
  backoffMs: 5000,
  maxBackoffMs: 60_000,
  maxAttempts: 4,
  ratePerSecond: 1000,
  burst: 300,
  heardKeepMs: 30_000,
  maxConcurrentHard: 3,
};

/** Lowest port a NAT hands out for an unprivileged source port (Linux: 1024-65535). */
export const SPRAY_PORT_MIN = 1024;
export const SPRAY_PORT_MAX = 65_535;

/**
 * Our role towards a peer, from the NAT kinds both sides offered in the session handshake
 * (both sides compute it from the same pair, so they agree). Undefined: no birthday, because
 * ordinary probing suffices (a side without NAT, or both endpoint-independent), nothing is
 * known yet, or both sides are endpoint-dependent (relay).
 */
export function birthdayRole(self: NatKind | undefined, peer: NatKind | undefined): BirthdayRole | undefined {
  if (self === 'endpoint-dependent' && peer === 'endpoint-independent') return 'hard';
  if (self === 'endpoint-independent' && peer === 'endpoint-dependent') return 'easy';
  return undefined;
}

/** Both sides endpoint-dependent: the pair that birthday punching leaves to the relay. */
export function bothHard(self: NatKind | undefined, peer: NatKind | undefined): boolean {
  return self === 'endpoint-dependent' && peer === 'endpoint-dependent';
}

/** When attempt `k` (0-based) starts, in ms after the series started; undefined past the last. */
export function attemptStart(k: number, t: BirthdayTuning = BIRTHDAY_TUNING): number | undefined {
  if (!Number.isInteger(k) || k < 0 || k >= t.maxAttempts) return undefined;
  let at = 0;
  for (let i = 1; i <= k; i++) at += t.attemptMs + Math.min(t.maxBackoffMs, t.backoffMs * 2 ** (i - 1));
  return at;
}

/** How many spray probes are due `elapsedMs` into an attempt (cumulative, capped by the budget). */
export function sprayDue(elapsedMs: number, t: BirthdayTuning = BIRTHDAY_TUNING): number {
  const active = elapsedMs - t.sprayDelayMs;
  if (active < 0) return 0;
  return Math.min(t.sprayBudget, Math.floor((active * t.sprayPerSecond) / 1000) + 1);
}

/** The most probes one attempt can send, by role (for docs, tests and the budget check). */
export function attemptBudget(role: BirthdayRole, targets: number, t: BirthdayTuning = BIRTHDAY_TUNING): number {
  return role === 'hard' ? t.hardSockets * t.hardRounds * targets : t.sprayBudget;
}

/** The chance that an attempt gets no probe through: (1 - m/r)^n, n distinct probes. */
export function missProbability(mappings: number, probes: number, range = SPRAY_PORT_MAX - SPRAY_PORT_MIN + 1): number {
  // Distinct ports: the exact hypergeometric miss chance, prod (r - m - i) / (r - i).
  let p = 1;
  for (let i = 0; i < probes && p > 0; i++) p *= Math.max(0, range - mappings - i) / (range - i);
  return p;
}

/**
 * `count` distinct random ports in [min, max]: every spray probe tries a port no other
 * probe of the attempt tried (a partial Fisher-Yates over a sparse map: O(count)).
 */
export function distinctPorts(
  count: number,
  min = SPRAY_PORT_MIN,
  max = SPRAY_PORT_MAX,
  random: (lo: number, hiExclusive: number) => number = randomInt,
): number[] {
  const size = max - min + 1;
  const n = Math.max(0, Math.min(count, size));
  const swapped = new Map<number, number>();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const j = random(i, size);
    const vj = swapped.get(j) ?? j;
    swapped.set(j, swapped.get(i) ?? i);
    out.push(min + vj);
  }
  return out;
}

/** A token bucket on an explicit clock: the node-wide bound on birthday probes. */
export class ProbeBucket {
  #tokens: number;
  #at: number;
  readonly #rate: number;
  readonly #burst: number;

  constructor(ratePerSecond: number, burst: number, now: number) {
    this.#rate = ratePerSecond;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = now;
  }

  /** Takes up to `want` tokens; returns how many it got. */
  take(want: number, now: number): number {
    if (now > this.#at) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) * this.#rate) / 1000);
      this.#at = now;
    }
    const got = Math.max(0, Math.min(want, Math.floor(this.#tokens)));
    this.#tokens -= got;
    return got;
  }
}
