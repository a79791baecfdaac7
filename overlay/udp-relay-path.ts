// The `udp-relayed` rung of the path ladder: when a peer's own UDP candidates do not answer
// (both behind NATs a punch does not open, e.g. endpoint-dependent "symmetric" ones), the
// session runs through a relay node's UDP relay (dataplane/udp-relay.ts), which forwards the
// sealed datagrams without opening them. This module is the member's side: it asks relays for
// bindings over libp2p (overlay/relay-binding.ts), registers our receiver indexes with
// allocate datagrams from our data socket, and offers each relay's endpoint to the prober
// (overlay/udp-paths.ts) as one more candidate. The prober's sealed probes decide: the first
// relay whose probe is answered becomes the endpoint (so among several relays the quickest
// wins), and a relay that stops answering loses the path to the next one by the ordinary
// liveness rule. Direct candidates keep being probed at the slow rate; once they answer
// steadily the session moves off the relay (preferDirect).
//
// Both members ask the same relays (the ones with the smallest peer IDs), so every relay in
// the set holds both halves of the binding; bindings are idempotent on the relay, so asking
// again (after a relay restart, or when it stops answering) is harmless.
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

/**
 * The relays a pair uses, the same on both sides: relay nodes that publish a UDP relay port
 * and a public IPv4 address (the data sockets of both members speak IPv4), neither member
 * itself, ordered by peer ID. Pure; exported for tests.
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
    const ip = r.publicAddrs.map((ma) => ipOf(ma)).find((a) => a !== undefined && !a.includes(':'));
    if (ip === undefined) continue;
    out.push({ node: r.node, peerId: r.peerId, endpoint: { ip, port: r.relayPort } });
  }
  out.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
  return out.slice(0, Math.max(0, max));
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
}

export class UdpRelayPath {
  readonly counters: UdpRelayPathCounters = {
    activated: 0,
    grants: 0,
    grantFailures: {},
    allocatesSent: 0,
    allocateErrors: 0,
    leftRelay: 0,
    released: 0,
  };
  readonly #o: UdpRelayPathOptions;
  readonly #peers = new Map<string, PeerRelays>();
  /** Remote indexes of every session, so a peer activated later registers the current ones. */
  readonly #indexes = new Map<string, number[]>();
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
    if (this.#stopped || this.#peers.has(node)) return;
    const info = this.#o.directory.get(node);
    if (info === undefined) return;
    const relays = chooseRelays(this.#o.directory.relays(), this.#o.selfPeerId, info.peerId, this.#o.maxRelays);
    if (relays.length === 0) return;
    this.counters.activated++;
    const p: PeerRelays = {
      node,
      peerId: info.peerId,
      indexes: [...(this.#indexes.get(node) ?? [])],
      sides: new Map(relays.map((r) => [r.peerId, newSide(r)])),
      directAnswers: 0,
      lastDirectAt: 0,
    };
    this.#peers.set(node, p);
    this.#o.log.info({ peer: node, relays: relays.map((r) => r.node) }, 'UDP candidates unanswered: trying UDP relays');
    this.tick(Date.now());
  }

  /**
   * A new session (first or rekey) for `s.node`: registers its index with the relays at once,
   * before the prober sends on it (the relay forwards only registered indexes).
   */
  sessionEstablished(s: ActiveSession): void {
    const indexes = pushIndex(this.#indexes.get(s.node) ?? [], s.remoteIndex);
    this.#indexes.set(s.node, indexes);
    const p = this.#peers.get(s.node);
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
