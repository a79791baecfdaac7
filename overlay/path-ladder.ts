// Which carrier a peer's traffic takes: its UDP session or the libp2p stream tunnel. Pure:
// the clock and the facts come in as arguments, the decision goes out, so hysteresis is
// unit-tested without timers. UDP is preferred whenever it has proven itself (an
// authenticated reply) and keeps answering; the stream tunnel (direct, hole-punched or
// relayed) carries traffic where UDP gets no reply. A UDP path that died must prove itself
// for a hold-down period before it gets traffic again, longer after each failure, so a
// flapping path does not bounce traffic back and forth.
import type { PathKind } from './path-kind.ts';

export type TransportMode = 'auto' | 'udp' | 'stream';
export type UdpPathKind = 'udp-direct' | 'udp-punched' | 'udp-relayed';
export type StreamPathKind = 'direct' | 'hole-punched' | 'relayed' | 'none';

export interface UdpFacts {
  /** When the current endpoint answered its first authenticated probe (after the last loss). */
  confirmedAt: number | undefined;
  /** Last authenticated datagram from the peer (data or control). */
  lastRxAt: number | undefined;
  kind: UdpPathKind;
}

export interface LadderState {
  carrier: 'udp' | 'stream';
  /** When UDP last lost the traffic (undefined: never). */
  demotedAt: number | undefined;
  /** Consecutive demotions (decays after a stable period on UDP). */
  demotions: number;
  /** When the carrier last changed. */
  since: number;
}

export interface LadderTuning {
  /** UDP without an authenticated datagram for this long is dead. Keepalives come more often. */
  deadAfterMs: number;
  /** After a demotion, UDP must be confirmed this long (doubling per demotion) before it is used again. */
  holdDownMs: number;
  holdDownMaxMs: number;
  /** UDP that carried traffic this long resets the demotion count. */
  stableAfterMs: number;
  /** To win traffic back, UDP must have answered within this long (keepalives come faster). */
  freshMs: number;
}

export const DEFAULT_TUNING: LadderTuning = {
  deadAfterMs: 5000,
  holdDownMs: 5000,
  holdDownMaxMs: 60_000,
  stableAfterMs: 60_000,
  freshMs: 2500,
};

export function initialLadder(now: number): LadderState {
  return { carrier: 'stream', demotedAt: undefined, demotions: 0, since: now };
}

export function udpAlive(udp: UdpFacts | undefined, now: number, tuning: LadderTuning = DEFAULT_TUNING): boolean {
  if (udp?.confirmedAt === undefined) return false;
  return now - (udp.lastRxAt ?? udp.confirmedAt) < tuning.deadAfterMs;
}

export function holdDownMs(demotions: number, tuning: LadderTuning = DEFAULT_TUNING): number {
  if (demotions <= 0) return 0;
  return Math.min(tuning.holdDownMaxMs, tuning.holdDownMs * 2 ** Math.min(demotions - 1, 16));
}

/** The next ladder state for one peer. */
export function stepLadder(
  state: LadderState,
  input: {
    mode: TransportMode;
    udp: UdpFacts | undefined;
    now: number;
    /** false: no stream tunnel is up either (e.g. its relay restarted). Absent: unknown (assume up). */
    streamUp?: boolean;
  },
  tuning: LadderTuning = DEFAULT_TUNING,
): LadderState {
  const { mode, udp, now } = input;
  if (mode === 'stream') return state.carrier === 'stream' ? state : { ...state, carrier: 'stream', since: now };
  if (mode === 'udp') return state.carrier === 'udp' ? state : { ...state, carrier: 'udp', since: now };
  const alive = udpAlive(udp, now, tuning);
  if (state.carrier === 'udp') {
    if (alive) {
      if (state.demotions > 0 && now - state.since >= tuning.stableAfterMs) return { ...state, demotions: 0 };
      return state;
    }
    return { carrier: 'stream', demotedAt: now, demotions: state.demotions + 1, since: now };
  }
  if (!alive || udp?.confirmedAt === undefined) return state;
  // Hysteresis: after a loss, UDP must have answered for the hold-down period, and the
  // confirmation must be newer than the loss.
  if (state.demotedAt !== undefined) {
    if (udp.confirmedAt < state.demotedAt) return state;
    // Hysteresis keeps traffic from bouncing between two carriers; with no stream tunnel
    // up, holding a freshly confirmed UDP path back only keeps the peer unreachable.
    if (input.streamUp === false) return { ...state, carrier: 'udp', since: now };
    if (now - (udp.lastRxAt ?? udp.confirmedAt) >= tuning.freshMs) return state;
    if (now - Math.max(udp.confirmedAt, state.demotedAt) < holdDownMs(state.demotions, tuning)) return state;
  }
  return { ...state, carrier: 'udp', since: now };
}

/** What status shows: the UDP kind when UDP carries traffic and answers, else the stream's path. */
export function visiblePath(
  state: LadderState,
  udp: UdpFacts | undefined,
  stream: StreamPathKind,
  now: number,
  tuning: LadderTuning = DEFAULT_TUNING,
): PathKind {
  if (state.carrier === 'udp') return udpAlive(udp, now, tuning) && udp ? udp.kind : 'none';
  return stream;
}

/**
 * How a confirmed UDP endpoint was reached: when either end has a public address nothing
 * had to be punched (the NAT'd side's own datagrams open its mapping); two NAT'd ends
 * reached each other through a punched mapping.
 */
export function classifyUdpPath(selfPublic: boolean, peerPublic: boolean): UdpPathKind {
  return selfPublic || peerPublic ? 'udp-direct' : 'udp-punched';
}
