// When to punch again, and how much punching a peer may ask of us. Pure (the clock is an
// argument), so the rules are unit-tested without timers.

/** First retry after 1 s, then 2 s, 4 s ... capped: a NAT mapping often settles within seconds. */
export const RETRY_FIRST_MS = 1000;
export const RETRY_MAX_MS = 60_000;

/** Delay before the next attempt after `failures` consecutive failures (failures ≥ 1). */
export function punchRetryDelayMs(failures: number, firstMs = RETRY_FIRST_MS, maxMs = RETRY_MAX_MS): number {
  if (failures <= 0) return 0;
  // 2 ** 30 is far past any cap; clamping the exponent keeps the arithmetic finite.
  return Math.min(maxMs, firstMs * 2 ** Math.min(failures - 1, 30));
}

export interface PunchGuardLimits {
  /** Punches one peer may start within `windowMs`. */
  perPeer: number;
  windowMs: number;
  /** Responder punches running at once, all peers together. */
  concurrent: number;
}

export const DEFAULT_GUARD_LIMITS: PunchGuardLimits = { perPeer: 6, windowMs: 60_000, concurrent: 8 };

export type GuardRefusal = 'busy' | 'rate-limited' | 'too-many-punches';

/**
 * Admission for punches a peer asks us to do (the responder side): one at a time per peer,
 * at most `perPeer` per window, at most `concurrent` overall. Without it, any member could
 * make us send seconds of SYNs (or probes) at an address of its choosing, as often as it likes.
 */
export class PunchGuard {
  readonly #limits: PunchGuardLimits;
  readonly #running = new Set<string>();
  readonly #starts = new Map<string, number[]>();

  constructor(limits: PunchGuardLimits = DEFAULT_GUARD_LIMITS) {
    this.#limits = limits;
  }

  /** Admits a punch for `peer` at time `now`, or says why not. Call release() when done. */
  admit(peer: string, now: number): { ok: true } | { ok: false; reason: GuardRefusal } {
    if (this.#running.has(peer)) return { ok: false, reason: 'busy' };
    if (this.#running.size >= this.#limits.concurrent) return { ok: false, reason: 'too-many-punches' };
    const recent = (this.#starts.get(peer) ?? []).filter((t) => now - t < this.#limits.windowMs);
    if (recent.length >= this.#limits.perPeer) {
      this.#starts.set(peer, recent);
      return { ok: false, reason: 'rate-limited' };
    }
    recent.push(now);
    this.#starts.set(peer, recent);
    this.#running.add(peer);
    this.#prune(now);
    return { ok: true };
  }

  release(peer: string): void {
    this.#running.delete(peer);
  }

  running(): number {
    return this.#running.size;
  }

  // Bounded memory: forget peers whose window has passed.
  #prune(now: number): void {
    if (this.#starts.size < 1024) return;
    for (const [peer, times] of this.#starts) {
      if (times.every((t) => now - t >= this.#limits.windowMs)) this.#starts.delete(peer);
    }
  }
}
