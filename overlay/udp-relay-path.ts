// The `udp-relayed` rung of the path ladder: when a peer's own UDP candidates do not answer
// (both behind NATs a punch does not open, e.g. endpoint-dependent "symmetric" ones), the
// session runs through a relay node's UDP relay (dataplane/udp-relay.ts), which forwards the
// sealed datagrams without opening them. This module is the member's side: it asks relays for
// bindings over libp2p (overlay/relay-binding.ts), registers our receiver indexes with
// allocate datagrams from our data socket, and offers each relay's endpoint to the prober
// (overlay/udp-paths.ts) as one more candidate. The prober's sealed probes decide: the first
// relay whose probe is answered becomes the endpoint; every reply through a relay is a round
// trip to the peer, so each relay's RTT is kept (smoothed), and a relay clearly faster than
// the one in use takes the path over (hysteresis: a margin and a minimum dwell), while a
// relay that went silent loses it to one that still answers before the path's liveness gives
// up (pickRelayEndpoint). Direct candidates keep being probed at the slow rate; once they
// answer steadily the session moves off the relay (preferDirect). A peer that needed a relay
// is remembered for a while, so its next session (after an idle close) asks the relays at
// once instead of after a whole unanswered probe burst.
//
// Both members ask the same relays (the ones with the smallest peer IDs), so every relay in
// the set holds both halves of the binding and each member registers with all of them; the
// two members may then send through different relays (each picks by its own RTTs), which
// works because a relay forwards to whichever endpoint the other member registered with it.
// Bindings are idempotent on the relay, so asking again (after a relay restart, or when it
// stops answering) is harmless.
import type { Connection } from '@libp2p/interface';
import type { Logger } from 'pino';
import { ipOf } from './addresses.ts';
import type { PeerDirectory, PeerInfo } from './directory.ts';
import { type RelayGrant, requestRelayBinding } from './relay-binding.ts';
import type { ActiveSession } from './udp-sessions.ts';
import { endpointKey, type UdpEndpoint } from './udp-types.ts';

/** What an allocate datagram carries (dataplane/udp-relay.ts's AllocateArgs). */
export interface RelayAllocateArgs {
  token: Uint8Array;
  bindingId: number;
  member: 0 | 1;
  indexes: readonly number[];
}

export interface RelayCandidate {
  node: string;
  peerId: string;
  endpoint: UdpEndpoint;
}

/** Relays tried at once for one peer (each holds a binding; the fastest answer wins). */
export const MAX_RELAYS_PER_PEER = 2;
/** Allocate re-sent this often: keeps our NAT mapping towards the relay (conntrack: 30 s unreplied). */
export const REALLOCATE_MS = 15_000;
/** A relay path that got no answer for this long has its bindings asked for again. */
export const REBIND_AFTER_SILENCE_MS = 2000;
/** Direct replies in a row (while on a relay) before the session moves back to direct. */
export const DIRECT_ANSWERS_TO_LEAVE_RELAY = 3;
const DIRECT_ANSWER_GAP_MS = 5000;
/** A peer that needed a relay gets relays at once on its next session within this time. */
export const RELAY_MEMORY_MS = 30 * 60_000;
const MAX_REMEMBERED = 4096;

/** What a relay's replies told us: smoothed round trip through it, and when it last answered. */
export interface RelayRtt {
  rttMs: number;
  lastReplyAt: number;
}

export interface RelayChoiceTuning {
  /** A relay whose last reply is older than this is silent (relays are probed every 500 ms). */
  silentMs: number;
  /** Another relay takes the path only if faster by this fraction of the current RTT ... */
  switchFraction: number;
  /** ... and by at least this many ms (sub-ms differences are noise). */
  switchMinGainMs: number;
  /** No move for speed alone within this long of the last change (failover is not held). */
  minDwellMs: number;
}

// silentMs: three relay probe rounds (udp-paths.ts RELAY_PROBE_MS, 500 ms) unanswered. The
// move then lands about 2 s after a relay dies, well inside the path's 5 s liveness: a
// member that missed it would fall back to the stream tunnel and hold UDP down for 5 s more.
export const DEFAULT_RELAY_CHOICE: RelayChoiceTuning = {
  silentMs: 1500,
  switchFraction: 0.25,
  switchMinGainMs: 1,
  minDwellMs: 10_000,
};

/**
 * Which relay endpoint (key) a session should send through: the current one unless it went
 * silent (then the fastest relay still answering) or another answering relay is faster by the
 * margin after the dwell time. Pure; exported for tests.
 */
export function pickRelayEndpoint(
  current: string | undefined,
  currentSince: number,
  seen: ReadonlyMap<string, RelayRtt>,
  now: number,
  t: RelayChoiceTuning = DEFAULT_RELAY_CHOICE,
): string | undefined {
  let best: string | undefined;
  for (const [key, r] of seen) {
    if (now - r.lastReplyAt > t.silentMs) continue;
    if (best === undefined || r.rttMs < seen.get(best)!.rttMs) best = key;
  }
  const cur = current === undefined ? undefined : seen.get(current);
  if (current === undefined || cur === undefined) return best ?? current;
  if (now - cur.lastReplyAt > t.silentMs) return best ?? current;
  if (best === undefined || best === current || now - currentSince < t.minDwellMs) return current;
  const gain = cur.rttMs - seen.get(best)!.rttMs;
  return gain >= Math.max(t.switchMinGainMs, cur.rttMs * t.switchFraction) ? best : current;
}

/** Smoothed RTT (EWMA, 1/4 weight to the new sample; the first sample sets it). */
export function smoothRtt(previous: number | undefined, sample: number): number {
  return previous === undefined ? sample : previous + (sample - previous) / 4;
}

/**
 * The relays a pair uses, the same on both sides: relay nodes that publish a UDP relay port
 * and a public address, neither member itself, ordered by peer ID. A relay's endpoint is its
 * public IPv4 address, else its public IPv6 one (a relay reachable over IPv6 only: the data
 * socket is dual-stack, and a member without IPv6 just counts a send error), written the way
 * the socket reports a sender (RFC 5952) so replies through it are recognised. Pure;
 * exported for tests.
 */
export function chooseRelays(
  relays: readonly PeerInfo[],
  selfPeerId: string,
  peerPeerId: string,
  max = MAX_RELAYS_PER_PEER,
): RelayCandidate[] {
  const out: RelayCandidate[] = [];
  for (const r of relays) {
    if (!r.relay || r.relayPort === undefined || r.peerId === selfPeerId || r.peerId === peerPeerId) continue;
    const ips = r.publicAddrs.map((ma) => ipOf(ma)).filter((a) => a !== undefined);
    const v6 = ips.find((a) => a.includes(':'));
    const ip = ips.find((a) => !a.includes(':')) ?? (v6 === undefined ? undefined : canonicalIpv6(v6));
    if (ip === undefined) continue;
    out.push({ node: r.node, peerId: r.peerId, endpoint: { ip, port: r.relayPort } });
  }
  out.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
  return out.slice(0, Math.max(0, max));
}

/** IPv6 text in its canonical form (lower case, longest zero run compressed), as URLs write it. */
export function canonicalIpv6(ip: string): string | undefined {
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

/** The receiver indexes to register: the newest first, deduplicated, at most `max` (allocate holds 4). */
export function pushIndex(indexes: readonly number[], index: number, max = 3): number[] {
  return [index, ...indexes.filter((i) => i !== index)].slice(0, max);
}

export interface UdpRelayPathOptions {
  directory: PeerDirectory;
  selfPeerId: string;
  /** The data socket's allocate sender (UdpDataSocket.sendRelayAllocate). */
  sendAllocate: (relay: UdpEndpoint, datagram: Uint8Array) => boolean;
  /** Builds the allocate datagram (dataplane/udp-relay.ts's relayAllocateDatagram). */
  allocateDatagram: (a: RelayAllocateArgs) => Uint8Array;
  /** A libp2p connection to a node (the relay), open or dialled. */
  connectionTo: (node: string) => Promise<Connection>;
  /** Milliseconds since the peer's UDP path last answered us (undefined: never confirmed). */
  ackAgeMs: (node: string) => number | undefined;
  /** A relay just registered us: probe now rather than at the next slow round. */
  probeSoon?: (node: string) => void;
  log: Logger;
  request?: typeof requestRelayBinding;
  maxRelays?: number;
  reallocateMs?: number;
  relayChoice?: Partial<RelayChoiceTuning>;
}

export interface UdpRelayPathCounters {
  /** Peers whose sessions were offered relay candidates. */
  activated: number;
  grants: number;
  /** Binding requests that failed, by reason. */
  grantFailures: Record<string, number>;
  allocatesSent: number;
  allocateErrors: number;
  /** Sessions that moved from a relay back to a direct endpoint. */
  leftRelay: number;
  /** Sessions that moved from one relay to another: `faster` (RTT) or `failover` (silent). */
  relayMoves: { faster: number; failover: number };
  /** Peers given relays at once on a new session because they needed one recently. */
  remembered: number;
  /** Peers given relays at once because both NATs are endpoint-dependent (no punch can work). */
  bothHard: number;
  /** Bindings released when a peer's sessions ended. */
  released: number;
}

interface RelaySide {
  relay: RelayCandidate;
  grant: RelayGrant | undefined;
  requesting: boolean;
  lastRequestAt: number;
  lastAllocateAt: number;
}

interface PeerRelays {
  node: string;
  peerId: string;
  /** Our sessions' remote indexes (the peer's receiver indexes we send to), newest first. */
  indexes: number[];
  sides: Map<string, RelaySide>;
  directAnswers: number;
  lastDirectAt: number;
  /** Per relay endpoint (endpointKey) we hold a grant on: its RTT and last reply. */
  rtts: Map<string, RelayRtt>;
  /** The relay endpoint the session sends through, and since when. */
  using: { key: string; since: number } | undefined;
}

export class UdpRelayPath {
  readonly counters: UdpRelayPathCounters = {
    activated: 0,
    grants: 0,
    grantFailures: {},
    allocatesSent: 0,
    allocateErrors: 0,
    leftRelay: 0,
    relayMoves: { faster: 0, failover: 0 },
    remembered: 0,
    bothHard: 0,
    released: 0,
  };
  readonly #o: UdpRelayPathOptions;
  readonly #peers = new Map<string, PeerRelays>();
  /** Remote indexes of every session, so a peer activated later registers the current ones. */
  readonly #indexes = new Map<string, number[]>();
  /** Nodes whose sessions ran through a relay lately (node → last reply through a relay). */
  readonly #needed = new Map<string, number>();
  #relayEndpoints: Set<string> | undefined;
  readonly #invalidate = (): void => {
    this.#relayEndpoints = undefined;
  };
  #stopped = false;

  constructor(opts: UdpRelayPathOptions) {
    this.#o = opts;
    for (const ev of ['peer:added', 'peer:updated', 'peer:removed'] as const) opts.directory.on(ev, this.#invalidate);
  }

  /** Whether an endpoint is a relay's (the path through it is `udp-relayed`). */
  isRelay(ep: UdpEndpoint): boolean {
    this.#relayEndpoints ??= new Set(
      chooseRelays(this.#o.directory.relays(), this.#o.selfPeerId, '', Number.MAX_SAFE_INTEGER).map((r) =>
        endpointKey(r.endpoint),
      ),
    );
    return this.#relayEndpoints.has(endpointKey(ep));
  }

  /** Relay endpoints the prober should try for `node` (those we hold a grant on). */
  targets(node: string): UdpEndpoint[] {
    const p = this.#peers.get(node);
    if (p === undefined) return [];
    return [...p.sides.values()].filter((s) => s.grant !== undefined).map((s) => s.relay.endpoint);
  }

  active(node: string): boolean {
    return this.#peers.has(node);
  }

  /** The peer's own candidates did not answer within the probe burst: bring the relays in. */
  unanswered(node: string): void {
    this.#activate(node, 'UDP candidates unanswered: trying UDP relays');
  }

  /** Both NATs are endpoint-dependent: the pair needs a relay, so bring them in at once. */
  bothHard(node: string): void {
    if (this.#activate(node, 'both NATs endpoint-dependent: trying UDP relays at once')) this.counters.bothHard++;
  }

  #activate(node: string, why: string): boolean {
    if (this.#stopped || this.#peers.has(node)) return false;
    const info = this.#o.directory.get(node);
    if (info === undefined) return false;
    const relays = chooseRelays(this.#o.directory.relays(), this.#o.selfPeerId, info.peerId, this.#o.maxRelays);
    if (relays.length === 0) return false;
    this.counters.activated++;
    const p: PeerRelays = {
      node,
      peerId: info.peerId,
      indexes: [...(this.#indexes.get(node) ?? [])],
      sides: new Map(relays.map((r) => [r.peerId, newSide(r)])),
      directAnswers: 0,
      lastDirectAt: 0,
      rtts: new Map(),
      using: undefined,
    };
    this.#peers.set(node, p);
    this.#o.log.info({ peer: node, relays: relays.map((r) => r.node) }, why);
    this.tick(Date.now());
    return true;
  }

  /**
   * A reply to one of our probes or keepalives came through a relay endpoint (`rttMs`: since
   * the probe left, when known); `current` is where the session sends now.
   */
  observe(node: string, from: UdpEndpoint, rttMs: number | undefined, now: number, current?: UdpEndpoint): void {
    const p = this.#peers.get(node);
    if (p === undefined) return;
    const key = endpointKey(from);
    if (![...p.sides.values()].some((s) => s.grant !== undefined && endpointKey(s.relay.endpoint) === key)) return;
    const prev = p.rtts.get(key);
    const sample = rttMs !== undefined && Number.isFinite(rttMs) && rttMs >= 0 ? rttMs : undefined;
    p.rtts.set(key, {
      rttMs: sample === undefined ? (prev?.rttMs ?? Number.POSITIVE_INFINITY) : smoothRtt(prev?.rttMs, sample),
      lastReplyAt: now,
    });
    this.#using(p, current, now);
    // A late reply through a relay while the session is back on a direct endpoint is no need.
    if (current === undefined || p.rtts.has(endpointKey(current))) this.#remember(node, now);
  }

  /**
   * A relay answered while the session sends through another relay: true if the session
   * should move to it (the one in use went silent, or this one is clearly faster).
   */
  shouldMove(node: string, current: UdpEndpoint, candidate: UdpEndpoint, now = Date.now()): boolean {
    const p = this.#peers.get(node);
    if (p === undefined) return false;
    this.#using(p, current, now);
    const cur = endpointKey(current);
    const tuning = { ...DEFAULT_RELAY_CHOICE, ...this.#o.relayChoice };
    const pick = pickRelayEndpoint(cur, p.using!.since, p.rtts, now, tuning);
    if (pick !== endpointKey(candidate)) return false;
    const silent = now - (p.rtts.get(cur)?.lastReplyAt ?? 0) > tuning.silentMs;
    this.counters.relayMoves[silent ? 'failover' : 'faster']++;
    this.#o.log.info(
      { peer: node, from: cur, to: pick, rtts: Object.fromEntries([...p.rtts].map(([k, r]) => [k, r.rttMs])) },
      silent ? 'UDP relay silent: moving to another relay' : 'faster UDP relay: moving to it',
    );
    p.using = { key: pick, since: now };
    return true;
  }

  /** Smoothed RTT through each relay endpoint we hold a grant on for `node` (for status). */
  relayRtts(node: string): Record<string, number> {
    const p = this.#peers.get(node);
    return p === undefined ? {} : Object.fromEntries([...p.rtts].map(([k, r]) => [k, r.rttMs]));
  }

  #using(p: PeerRelays, current: UdpEndpoint | undefined, now: number): void {
    const key = current === undefined ? undefined : endpointKey(current);
    if (key === undefined || !p.rtts.has(key)) return;
    if (p.using?.key !== key) p.using = { key, since: now };
  }

  #remember(node: string, now: number): void {
    this.#needed.delete(node);
    this.#needed.set(node, now);
    if (this.#needed.size > MAX_REMEMBERED) this.#needed.delete(this.#needed.keys().next().value!);
  }

  /**
   * A new session (first or rekey) for `s.node`: registers its index with the relays at once,
   * before the prober sends on it (the relay forwards only registered indexes).
   */
  sessionEstablished(s: ActiveSession): void {
    const indexes = pushIndex(this.#indexes.get(s.node) ?? [], s.remoteIndex);
    this.#indexes.set(s.node, indexes);
    let p = this.#peers.get(s.node);
    // Its last sessions needed a relay (e.g. before an idle close): no unanswered burst first.
    const needed = this.#needed.get(s.node);
    if (p === undefined && needed !== undefined && Date.now() - needed < RELAY_MEMORY_MS) {
      if (this.#activate(s.node, 'peer needed a UDP relay lately: trying UDP relays at once'))
        this.counters.remembered++;
      p = this.#peers.get(s.node);
    }
    if (p === undefined) return;
    p.indexes = indexes;
    for (const side of p.sides.values()) this.#allocate(p, side, Date.now());
  }

  /**
   * A direct endpoint answered while the session runs through a relay: true once it has
   * answered often enough in a row to leave the relay (hysteresis against a flaky direct path).
   */
  preferDirect(node: string, now = Date.now()): boolean {
    const p = this.#peers.get(node);
    if (p === undefined) return true;
    // "In a row": a gap longer than a few slow probe rounds starts the count over.
    if (now - p.lastDirectAt > DIRECT_ANSWER_GAP_MS) p.directAnswers = 0;
    p.lastDirectAt = now;
    p.directAnswers++;
    if (p.directAnswers < DIRECT_ANSWERS_TO_LEAVE_RELAY) return false;
    p.directAnswers = 0;
    this.#needed.delete(node);
    this.counters.leftRelay++;
    this.#o.log.info({ peer: node }, 'direct UDP answers again: leaving the relay');
    return true;
  }

  /**
   * The peer's sessions are gone (idle, the peer left): its bindings are released on the
   * relays at once (best effort; the relay also expires idle bindings), so a member's share
   * of a relay (64 bindings) is not held by pairs that stopped talking.
   */
  lost(node: string): void {
    const p = this.#peers.get(node);
    this.#peers.delete(node);
    this.#indexes.delete(node);
    if (p === undefined || this.#stopped) return;
    const request = this.#o.request ?? requestRelayBinding;
    for (const side of p.sides.values()) {
      if (side.grant === undefined) continue;
      this.#o
        .connectionTo(side.relay.node)
        .then((conn) => request(conn, p.peerId, { op: 'release' }))
        .then(() => {
          this.counters.released++;
        })
        .catch((err: Error) =>
          this.#o.log.debug({ peer: node, relay: side.relay.node, err: err.message }, 'UDP relay release failed'),
        );
    }
  }

  /** Keeps grants and allocations fresh; called by the prober's timer. */
  tick(now: number): void {
    if (this.#stopped) return;
    for (const p of this.#peers.values()) {
      const age = this.#o.ackAgeMs(p.node);
      // Silent path: a relay may have restarted and forgotten us; asking again is idempotent.
      const quiet = age === undefined || age >= REBIND_AFTER_SILENCE_MS;
      for (const side of p.sides.values()) {
        // A quiet relay is asked again every second: a restarted relay is back on the path
        // before the path's liveness (5 s) gives up on it.
        const retryMs = side.grant === undefined ? 2000 : quiet ? 1000 : Number.POSITIVE_INFINITY;
        if (!side.requesting && now - side.lastRequestAt >= retryMs) this.#request(p, side, now);
        else if (side.grant !== undefined && now - side.lastAllocateAt >= (this.#o.reallocateMs ?? REALLOCATE_MS))
          this.#allocate(p, side, now);
      }
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const ev of ['peer:added', 'peer:updated', 'peer:removed'] as const)
      this.#o.directory.off(ev, this.#invalidate);
    this.#peers.clear();
    this.#indexes.clear();
    this.#needed.clear();
  }

  #request(p: PeerRelays, side: RelaySide, now: number): void {
    side.requesting = true;
    side.lastRequestAt = now;
    const request = this.#o.request ?? requestRelayBinding;
    this.#o
      .connectionTo(side.relay.node)
      .then((conn) => request(conn, p.peerId))
      .then((reply) => {
        if (!('bindingId' in reply)) throw new Error('the relay answered a bind with a release');
        if (this.#peers.get(p.node) !== p) return;
        const changed = side.grant?.bindingId !== reply.bindingId;
        side.grant = { ...reply, port: side.relay.endpoint.port };
        this.counters.grants++;
        if (changed)
          this.#o.log.info({ peer: p.node, relay: side.relay.node, binding: reply.bindingId }, 'UDP relay binding');
        this.#allocate(p, side, Date.now());
        this.#o.probeSoon?.(p.node);
      })
      .catch((err: Error & { reason?: string }) => {
        const reason = err.reason ?? 'error';
        this.counters.grantFailures[reason] = (this.counters.grantFailures[reason] ?? 0) + 1;
        this.#o.log.debug({ peer: p.node, relay: side.relay.node, err: err.message }, 'UDP relay binding failed');
      })
      .finally(() => {
        side.requesting = false;
      });
  }

  #allocate(p: PeerRelays, side: RelaySide, now: number): void {
    const g = side.grant;
    if (g === undefined || p.indexes.length === 0) return;
    side.lastAllocateAt = now;
    try {
      const datagram = this.#o.allocateDatagram({
        token: g.token,
        bindingId: g.bindingId,
        member: g.member,
        indexes: p.indexes,
      });
      if (this.#o.sendAllocate(side.relay.endpoint, datagram)) this.counters.allocatesSent++;
      else this.counters.allocateErrors++;
    } catch {
      this.counters.allocateErrors++;
    }
  }
}

function newSide(relay: RelayCandidate): RelaySide {
  return { relay, grant: undefined, requesting: false, lastRequestAt: 0, lastAllocateAt: 0 };
}
