// The UDP data sessions with every peer: handshakes over /edgemesh/session/1.0.0 (either
// side may start one), installing the derived keys on the data socket, rekeying on time
// and on packet count, and keeping a replaced session for a grace period so datagrams
// already in flight still open. Which endpoint a session sends to is the prober's job
// (overlay/udp-probe.ts); whether traffic uses it at all is the path ladder's.
import { randomInt } from 'node:crypto';
import type { Connection, Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { PeerDirectory } from './directory.ts';
import type { Host } from './host.ts';
import type { NatKind } from './nat-kind.ts';
import { deriveSessionKeys, generateEphemeral, type HandshakeSide } from './session-keys.ts';
import {
  initiateSession,
  respondSession,
  SESSION_PROTOCOL,
  type SessionOffer,
  SessionProtocolError,
} from './session-protocol.ts';
import type { DataSocketLike, UdpEndpoint } from './udp-types.ts';

export interface ActiveSession {
  node: string;
  peerId: string;
  localIndex: number;
  remoteIndex: number;
  /** The peer's candidate endpoints from the handshake. */
  candidates: UdpEndpoint[];
  createdAt: number;
  /** Whether we started the handshake (the initiator rekeys on time first). */
  initiator: boolean;
  /** The NAT kinds both sides offered in this handshake (undefined: not offered). */
  selfNat?: NatKind;
  peerNat?: NatKind;
}

export interface UdpSessionCounters {
  handshakesInitiated: number;
  handshakesAccepted: number;
  /** Handshakes that did not produce a session, by reason (ours or the peer's). */
  handshakeFailures: Record<string, number>;
  rekeys: number;
  expired: number;
  /** Candidate endpoints a peer offered that we refused to probe. */
  candidatesRefused: number;
}

export interface UdpSessionsOptions {
  host: Host;
  directory: PeerDirectory;
  socket: DataSocketLike;
  /** The AEAD the data socket runs; both ends must match. */
  cipher: string;
  /** Our candidate endpoints (LAN addresses + the UDP port, later reflected ones). */
  localEndpoints: () => UdpEndpoint[] | Promise<UdpEndpoint[]>;
  /** A libp2p connection to the node (existing or dialled) to run a handshake on. */
  connectionTo: (node: string) => Promise<Connection>;
  log: Logger;
  onEstablished: (session: ActiveSession) => void;
  /** A peer's last session is gone (expired, peer removed, stopped). */
  onLost: (node: string) => void;
  rekeyAfterMs?: number;
  rekeyAfterPackets?: number;
  graceMs?: number;
  /** Refuse handshakes (transport pinned to the stream path). */
  enabled?: () => boolean;
  /** Our NAT kind now, offered in handshakes (overlay/birthday-plan.ts decides from the pair). */
  natKind?: () => NatKind;
  /**
   * Keeps the peer's candidates we may probe: a member must not be able to aim our probes
   * at third parties. Absent: all (validated) candidates.
   */
  filterCandidates?: (node: string, candidates: UdpEndpoint[]) => Promise<UdpEndpoint[]>;
}

interface PeerSessions {
  node: string;
  peerId: string;
  current: ActiveSession | undefined;
  retiring: Map<number, NodeJS.Timeout>;
  handshake: Promise<ActiveSession | undefined> | undefined;
  /** Times of accepted inbound handshakes (rate limit). */
  inbound: number[];
  /**
   * When a hello carrying our NAT kind was answered by a closed stream: an agent from before
   * the `nat` field refuses unknown fields. Hellos to that peer leave it out for a while.
   */
  natRefusedAt?: number;
}

/** How long hellos to a peer that refused the `nat` field leave it out before trying again. */
export const NAT_FIELD_RETRY_MS = 10 * 60_000;

export const REKEY_AFTER_MS = 120_000;
/** Well below any AEAD nonce limit; mostly a guard against a session living forever under load. */
export const REKEY_AFTER_PACKETS = 2 ** 32;
export const GRACE_MS = 10_000;
/** Inbound handshakes one peer may start per minute (each costs an X25519 and an index). */
const INBOUND_PER_MINUTE = 20;

export class UdpSessions {
  readonly counters: UdpSessionCounters = {
    handshakesInitiated: 0,
    handshakesAccepted: 0,
    handshakeFailures: {},
    rekeys: 0,
    expired: 0,
    candidatesRefused: 0,
  };
  readonly #o: UdpSessionsOptions;
  readonly #peers = new Map<string, PeerSessions>();
  readonly #byIndex = new Map<number, { node: string; session: ActiveSession | undefined }>();
  readonly #timer: NodeJS.Timeout;
  readonly #rekeyAfterMs: number;
  readonly #rekeyAfterPackets: number;
  readonly #graceMs: number;
  #stopped = false;

  constructor(opts: UdpSessionsOptions) {
    this.#o = opts;
    this.#rekeyAfterMs = opts.rekeyAfterMs ?? REKEY_AFTER_MS;
    this.#rekeyAfterPackets = opts.rekeyAfterPackets ?? REKEY_AFTER_PACKETS;
    this.#graceMs = opts.graceMs ?? GRACE_MS;
    opts.host
      .handle(SESSION_PROTOCOL, (stream, conn) => this.#respond(stream, conn), {
        runOnLimitedConnection: true,
        maxInboundStreams: 4,
      })
      .catch((err: Error) => opts.log.error({ err: err.message }, 'cannot serve the UDP session protocol'));
    this.#timer = setInterval(() => this.#tick(), Math.min(1000, this.#rekeyAfterMs / 4));
    this.#timer.unref();
  }

  /** The node a receiver index belongs to (current or retiring session), for inbound datagrams. */
  nodeOf(localIndex: number): string | undefined {
    // '' marks an index reserved by a handshake still under way.
    return this.#byIndex.get(localIndex)?.node || undefined;
  }

  /** The session a receiver index belongs to, if it is a current one. */
  sessionOf(localIndex: number): ActiveSession | undefined {
    return this.#byIndex.get(localIndex)?.session;
  }

  /** Nodes we hold a current session with. */
  nodes(): string[] {
    return [...this.#peers.values()].filter((p) => p.current !== undefined).map((p) => p.node);
  }

  current(node: string): ActiveSession | undefined {
    return this.#peers.get(node)?.current;
  }

  /** Sets a session up with `node` unless one exists or a handshake is under way. */
  ensure(node: string): Promise<ActiveSession | undefined> {
    const peer = this.#peer(node);
    if (peer === undefined) return Promise.resolve(undefined);
    if (peer.current !== undefined) return Promise.resolve(peer.current);
    return this.#handshake(peer);
  }

  /** A fresh session now (rekey), replacing the current one after the handshake. */
  rekey(node: string): Promise<ActiveSession | undefined> {
    const peer = this.#peer(node);
    if (peer === undefined) return Promise.resolve(undefined);
    this.counters.rekeys++;
    return this.#handshake(peer);
  }

  drop(node: string): void {
    const peer = this.#peers.get(node);
    if (peer === undefined) return;
    this.#peers.delete(node);
    for (const [idx, t] of peer.retiring) {
      clearTimeout(t);
      this.#remove(idx);
    }
    if (peer.current !== undefined) {
      this.#remove(peer.current.localIndex);
      this.#o.onLost(node);
    }
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    for (const node of [...this.#peers.keys()]) this.drop(node);
    await this.#o.host.unhandle(SESSION_PROTOCOL).catch(() => {});
  }

  #peer(node: string): PeerSessions | undefined {
    const info = this.#o.directory.get(node);
    if (info === undefined) return undefined;
    let peer = this.#peers.get(node);
    if (peer !== undefined && peer.peerId !== info.peerId) {
      // The node came back with another identity: its old keys mean nothing now.
      this.drop(node);
      peer = undefined;
    }
    if (peer === undefined) {
      peer = { node, peerId: info.peerId, current: undefined, retiring: new Map(), handshake: undefined, inbound: [] };
      this.#peers.set(node, peer);
    }
    return peer;
  }

  #handshake(peer: PeerSessions): Promise<ActiveSession | undefined> {
    if (peer.handshake !== undefined) return peer.handshake;
    peer.handshake = this.#initiate(peer).finally(() => {
      peer.handshake = undefined;
    });
    return peer.handshake;
  }

  async #initiate(peer: PeerSessions): Promise<ActiveSession | undefined> {
    if (this.#stopped || this.#o.enabled?.() === false) return undefined;
    this.counters.handshakesInitiated++;
    const eph = generateEphemeral();
    const index = this.#allocateIndex();
    let sentNat: NatKind | undefined;
    try {
      const conn = await this.#o.connectionTo(peer.node);
      const refused = peer.natRefusedAt !== undefined && Date.now() - peer.natRefusedAt < NAT_FIELD_RETRY_MS;
      sentNat = refused ? undefined : this.#o.natKind?.();
      const nat = sentNat;
      const own: SessionOffer = {
        ephemeral: eph.publicKey,
        index,
        cipher: this.#o.cipher,
        endpoints: await this.#o.localEndpoints(),
        ...(nat === undefined ? {} : { nat }),
      };
      const answer = await initiateSession(conn, own);
      if (!answer.accepted)
        throw new SessionProtocolError('peer-refused', `peer refused the session: ${answer.reason}`);
      if (answer.cipher !== this.#o.cipher) {
        throw new SessionProtocolError('cipher-mismatch', `peer runs ${answer.cipher}, we run ${this.#o.cipher}`);
      }
      const self: HandshakeSide = { peerId: this.#selfId(), ephemeral: eph.publicKey, index };
      const remote: HandshakeSide = { peerId: peer.peerId, ephemeral: answer.ephemeral, index: answer.index };
      const keys = deriveSessionKeys({
        ownPrivate: eph.privateKey,
        initiator: self,
        responder: remote,
        selfIsInitiator: true,
      });
      return this.#install(peer, keys, await this.#filter(peer.node, answer.endpoints), true, {
        self: nat,
        peer: answer.nat,
      });
    } catch (err) {
      this.#byIndex.delete(index);
      const reason = err instanceof SessionProtocolError ? err.reason : 'error';
      if (sentNat !== undefined && reason === 'signal-closed') peer.natRefusedAt = Date.now();
      this.counters.handshakeFailures[reason] = (this.counters.handshakeFailures[reason] ?? 0) + 1;
      this.#o.log.info({ peer: peer.node, err: (err as Error).message }, 'UDP session handshake failed');
      return undefined;
    }
  }

  async #respond(stream: Stream, conn: Connection): Promise<void> {
    const info = this.#o.directory.byPeerId(conn.remotePeer.toString());
    const result = await respondSession(stream, async (offer) => {
      if (info === undefined) return { reject: 'not a cluster member' };
      if (this.#stopped || this.#o.enabled?.() === false) return { reject: 'UDP sessions disabled' };
      if (offer.cipher !== this.#o.cipher)
        return { reject: `cipher ${offer.cipher} not supported (${this.#o.cipher})` };
      const peer = this.#peer(info.node);
      if (peer === undefined) return { reject: 'not a cluster member' };
      // Both sides started a handshake at once: exactly one may win, or each would end up
      // sending on a session the other retires. The smaller peer ID's handshake wins.
      if (peer.handshake !== undefined && this.#selfId() < peer.peerId) return { reject: 'handshake crossing' };
      const before = peer.current;
      const now = Date.now();
      peer.inbound = peer.inbound.filter((t) => now - t < 60_000);
      if (peer.inbound.length >= INBOUND_PER_MINUTE) return { reject: 'too many handshakes' };
      peer.inbound.push(now);
      const candidates = await this.#filter(peer.node, offer.endpoints);
      // Checked again after the wait (the check may take a relay round trip): our own
      // handshake may have started meanwhile, for traffic to the peer, and the other side
      // accepts it since its ID is larger. Accepting this one too would install two sessions
      // on each end, and each end may keep sending on the one the other retires.
      const ownSince = peer.handshake !== undefined || (peer.current !== before && peer.current?.initiator === true);
      if (ownSince && this.#selfId() < peer.peerId) return { reject: 'handshake crossing' };
      const nat = this.#o.natKind?.();
      const eph = generateEphemeral();
      const index = this.#allocateIndex();
      const remote: HandshakeSide = { peerId: peer.peerId, ephemeral: offer.ephemeral, index: offer.index };
      const self: HandshakeSide = { peerId: this.#selfId(), ephemeral: eph.publicKey, index };
      try {
        const keys = deriveSessionKeys({
          ownPrivate: eph.privateKey,
          initiator: remote,
          responder: self,
          selfIsInitiator: false,
        });
        this.#install(peer, keys, candidates, false, { self: nat, peer: offer.nat });
      } catch (err) {
        this.#byIndex.delete(index);
        return { reject: (err as Error).message };
      }
      return {
        ephemeral: eph.publicKey,
        index,
        cipher: this.#o.cipher,
        endpoints: await this.#o.localEndpoints(),
        // Only to a peer that sent its own: an agent from before the field refuses it.
        ...(nat === undefined || offer.nat === undefined ? {} : { nat }),
      };
    });
    if (result.ok) this.counters.handshakesAccepted++;
    else
      this.counters.handshakeFailures[`inbound-${result.reason}`] =
        (this.counters.handshakeFailures[`inbound-${result.reason}`] ?? 0) + 1;
  }

  #install(
    peer: PeerSessions,
    keys: { localIndex: number; remoteIndex: number; txKey: Uint8Array; rxKey: Uint8Array },
    candidates: UdpEndpoint[],
    initiator: boolean,
    nat: { self: NatKind | undefined; peer: NatKind | undefined } = { self: undefined, peer: undefined },
  ): ActiveSession {
    if (this.#peers.get(peer.node) !== peer || this.#stopped)
      throw new SessionProtocolError('peer-gone', 'peer left during the handshake');
    const previous = peer.current;
    // Keep sending to the endpoint the old session proved until the prober confirms one.
    this.#o.socket.addSession(keys);
    const session: ActiveSession = {
      node: peer.node,
      peerId: peer.peerId,
      localIndex: keys.localIndex,
      remoteIndex: keys.remoteIndex,
      candidates,
      createdAt: Date.now(),
      initiator,
      ...(nat.self === undefined ? {} : { selfNat: nat.self }),
      ...(nat.peer === undefined ? {} : { peerNat: nat.peer }),
    };
    peer.current = session;
    this.#byIndex.set(keys.localIndex, { node: peer.node, session });
    if (previous !== undefined) this.#retire(peer, previous);
    this.#o.log.info(
      {
        peer: peer.node,
        localIndex: keys.localIndex,
        initiator,
        candidates: candidates.length,
        rekey: previous !== undefined,
      },
      'UDP session established',
    );
    this.#o.onEstablished(session);
    return session;
  }

  /** The old session still opens what the peer sent before switching, for a grace period. */
  #retire(peer: PeerSessions, old: ActiveSession): void {
    this.#byIndex.set(old.localIndex, { node: peer.node, session: undefined });
    const timer = setTimeout(() => {
      peer.retiring.delete(old.localIndex);
      this.#remove(old.localIndex);
    }, this.#graceMs);
    timer.unref();
    peer.retiring.set(old.localIndex, timer);
  }

  #remove(localIndex: number): void {
    this.#byIndex.delete(localIndex);
    try {
      this.#o.socket.removeSession(localIndex);
    } catch {
      // already gone on the socket (closed): nothing to free
    }
  }

  #tick(): void {
    const now = Date.now();
    for (const peer of this.#peers.values()) {
      const s = peer.current;
      if (s === undefined || peer.handshake !== undefined) continue;
      const age = now - s.createdAt;
      // Past this age the keys are not used any more, whether or not a rekey worked.
      if (age > 2 * this.#rekeyAfterMs + 60_000) {
        this.counters.expired++;
        this.#o.log.warn({ peer: peer.node }, 'UDP session expired without a rekey');
        peer.current = undefined;
        this.#remove(s.localIndex);
        this.#o.onLost(peer.node);
        continue;
      }
      const tx = Number(this.#o.socket.session(s.localIndex)?.txCounter ?? 0);
      // The initiator rekeys on time; the responder only later, as a backstop, so the two
      // rarely cross (crossing is harmless: two sessions, both valid, the newer wins).
      const due = age > this.#rekeyAfterMs + (s.initiator ? 0 : Math.max(1000, this.#rekeyAfterMs / 4));
      if (due || tx >= this.#rekeyAfterPackets) void this.rekey(peer.node);
    }
  }

  async #filter(node: string, candidates: UdpEndpoint[]): Promise<UdpEndpoint[]> {
    if (this.#o.filterCandidates === undefined) return candidates;
    const kept = await this.#o.filterCandidates(node, candidates);
    this.counters.candidatesRefused += candidates.length - kept.length;
    return kept;
  }

  #allocateIndex(): number {
    for (;;) {
      const idx = randomInt(1, 0xffff_ffff);
      if (!this.#byIndex.has(idx)) {
        // Reserved now so a concurrent handshake cannot draw it too.
        this.#byIndex.set(idx, { node: '', session: undefined });
        return idx;
      }
    }
  }

  #selfId(): string {
    return this.#o.host.peerId.toString();
  }

  /** Per-node view for status. */
  describe(node: string): { localIndex: number; ageMs: number; candidates: number } | undefined {
    const s = this.#peers.get(node)?.current;
    return s === undefined
      ? undefined
      : { localIndex: s.localIndex, ageMs: Date.now() - s.createdAt, candidates: s.candidates.length };
  }
}
