// Dialling a peer the way its path plan says: its public addresses (direct), a connection it
// already holds to us or a relay (reverse: it is behind NAT, we are public), or a relay's
// circuit (relayed); and which open connection to a peer is straight to it.
import type { Connection } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import { circuitAddr, ipOf, isCircuit, withPeer } from './addresses.ts';
import { withDeadline } from './deadline.ts';
import type { PeerDirectory, PeerInfo } from './directory.ts';
import type { Host } from './host.ts';
import { dialTransport } from './libp2p-internals.ts';
import type { PathPlan } from './path-policy.ts';

/** Pauses between relayed dial attempts of one connect (then the error goes to the caller). */
const RELAY_DIAL_RETRIES_MS = [200, 400, 800];

export interface DialerDeps {
  host: Host;
  directory: PeerDirectory;
  /** Our own peer id (never a relay to ourselves). */
  peerId: string;
  planFor(node: string): PathPlan;
  /** Whether a connection runs over a relay's TCP splice (its remote address is the relay's). */
  isSpliced(connectionId: string): boolean;
  /** The address a relay sees `peerId` connect from (the hole punch asks it). */
  relayObservedIpOf(peerId: string): Promise<string>;
  stopped(): boolean;
  log: Logger;
}

export class Dialer {
  readonly #d: DialerDeps;

  constructor(deps: DialerDeps) {
    this.#d = deps;
  }

  async dialFor(peer: PeerInfo, plan: PathPlan): Promise<Connection> {
    if (plan.kind === 'direct') {
      return withDeadline(10_000, 'direct dial', (signal) =>
        this.#d.host.dial(
          peer.publicAddrs.map((ma) => withPeer(ma, peer.peerId)),
          { signal },
        ),
      );
    }
    if (plan.kind === 'reverse') return this.#reachNatPeer(peer);
    return this.#dialViaRelay(peer);
  }

  /** A libp2p connection to run a UDP handshake on: an open one (direct first), else a new one. */
  async connectionTo(node: string): Promise<Connection> {
    const peer = this.#d.directory.get(node);
    if (peer === undefined) throw new Error(`node ${node} is not in the peer directory`);
    const open = this.#d.host.getConnections(peerIdFromString(peer.peerId)).filter((c) => c.status === 'open');
    const best = open.find((c) => this.isDirect(c)) ?? open[0];
    if (best !== undefined) return best;
    const plan = this.#d.planFor(node);
    if (plan.kind === 'host-gw' || plan.kind === 'none') throw new Error(`no libp2p path to ${node}`);
    return this.dialFor(peer, plan);
  }

  /** A connection straight to the peer: neither circuit-relayed nor spliced (its remote address is the peer's). */
  isDirect(c: Connection): boolean {
    return !isCircuit(c.remoteAddr) && !this.#d.isSpliced(c.id);
  }

  /** Where `peerId` connects from: a direct connection of ours to it, else a relay's view. */
  async observedIpOf(peerId: string): Promise<string> {
    const direct = this.#d.host
      .getConnections(peerIdFromString(peerId))
      .find((c) => c.status === 'open' && this.isDirect(c));
    const ip = direct === undefined ? undefined : ipOf(direct.remoteAddr);
    if (ip !== undefined) return ip;
    return this.#d.relayObservedIpOf(peerId);
  }

  /**
   * We are public, the peer is behind NAT: we cannot dial it. Reuse a connection it already
   * holds to us (its reservation connection when we are its relay, or any direct connection
   * it made); else reach it through another relay, and it dials us back directly once the
   * tunnel is up (see PunchScheduler.afterRelayedInbound).
   */
  async #reachNatPeer(peer: PeerInfo): Promise<Connection> {
    const held = this.#d.host
      .getConnections(peerIdFromString(peer.peerId))
      .find((c) => c.status === 'open' && c.limits === undefined && this.isDirect(c));
    if (held !== undefined) return held;
    try {
      return await this.#dialViaRelay(peer);
    } catch (err) {
      throw new Error(`${peer.node} holds no connection to us yet and ${(err as Error).message}`);
    }
  }

  /**
   * A relayed dial, tried again a few times within ~1.5 s when every relay refused at once: at a cold
   * start the peer's reservation is often still being made, and without this the next try
   * waited for the next packet (a second or more for a ping).
   */
  async #dialViaRelay(peer: PeerInfo): Promise<Connection> {
    for (const waitMs of RELAY_DIAL_RETRIES_MS) {
      const started = Date.now();
      try {
        return await this.#dialViaRelayOnce(peer);
      } catch (err) {
        // Only a quick refusal (no reservation yet) is worth another try; a dial that timed
        // out would only make the caller wait many times as long.
        if (
          this.#d.stopped() ||
          Date.now() - started > 2000 ||
          this.#d.directory.get(peer.node)?.peerId !== peer.peerId
        )
          throw err;
        this.#d.log.debug({ peer: peer.node, err: (err as Error).message, retryInMs: waitMs }, 'relayed dial failed');
        await new Promise((r) => setTimeout(r, waitMs));
      }
    }
    return this.#dialViaRelayOnce(peer);
  }

  async #dialViaRelayOnce(peer: PeerInfo): Promise<Connection> {
    const relays = this.#d.directory.relays().filter((r) => r.peerId !== peer.peerId && r.peerId !== this.#d.peerId);
    const errors: string[] = [];
    for (const relay of relays) {
      const addrs: Multiaddr[] = relay.publicAddrs.map((ma) => circuitAddr(ma, relay.peerId, peer.peerId));
      try {
        // Straight to the transport, past libp2p's dial queue (see dialTransport): we keep our own deadline.
        return await withDeadline(10_000, 'relayed dial', (signal) =>
          firstSuccess(addrs.map((ma) => () => dialTransport(this.#d.host, ma, { signal }))),
        );
      } catch (err) {
        errors.push(`${relay.node}: ${(err as Error).message}`);
      }
    }
    throw new Error(`cannot reach ${peer.node} through any relay (${errors.join('; ') || 'no relay'})`);
  }
}

async function firstSuccess<T>(attempts: Array<() => Promise<T>>): Promise<T> {
  let last: unknown = new Error('no address to dial');
  for (const attempt of attempts) {
    try {
      return await attempt();
    } catch (err) {
      last = err;
    }
  }
  throw last;
}
