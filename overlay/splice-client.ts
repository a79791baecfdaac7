// A member's side of the stream fallback's TCP splice (docs/stream-relay.md). To reach a peer
// that only a relay joins us to, we ask a relay for a splice (`splice()`); the relay offers
// the peer its token (`#accept()`); both of us open a plain TCP connection to the relay's
// splice port, send our token first, and then run libp2p's upgrade over the spliced socket
// as the hole punch does: the requester as outbound (noise initiator, yamux client), the
// peer as inbound, noise verifying the expected peer ID. The relay pipes ciphertext only.
//
// The relay's address is the one our libp2p connection to it goes to (no annotation needed);
// its port comes in the authenticated answer. An offer counts only from a relay node of the
// directory, about a member, on a direct connection, a few at a time.
import net from 'node:net';
import type { Connection, Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import { ipOf, ipPortToMultiaddr, isCircuit } from './addresses.ts';
import { withDeadline } from './deadline.ts';
import type { PeerDirectory } from './directory.ts';
import type { Host } from './host.ts';
import type { HostInternals } from './libp2p-internals.ts';
import { socketToMultiaddrConnection } from './socket-conn.ts';
import {
  FirstMessage,
  SPLICE_PROTOCOL,
  SpliceChannel,
  SpliceGrant,
  type SpliceOffer,
  type SpliceRequest,
  tokenBytes,
} from './splice-messages.ts';
import { SpliceError } from './splice-relay.ts';
import type { SpliceService } from './splice-service.ts';

export interface SpliceClientCounters {
  /** Splices we asked for and got up (a libp2p connection over the splice). */
  established: number;
  /** Splices a relay offered us and we joined. */
  accepted: number;
  /** Requests or offers that ended without a connection, by reason. */
  failed: Record<string, number>;
}

export interface SpliceClientOptions {
  host: Host;
  internals: HostInternals;
  directory: PeerDirectory;
  log: Logger;
  /** Every connection a splice produced (both roles), as soon as it opens. */
  onConnection(conn: Connection): void;
  /** The relay role, on relay nodes running a SpliceRelay. */
  service?: SpliceService | undefined;
  /** Offers being joined at once (each holds a socket and an upgrade). */
  maxConcurrentOffers?: number;
}

const UPGRADE_TIMEOUT_MS = 10_000;

export class SpliceClient {
  readonly counters: SpliceClientCounters = { established: 0, accepted: 0, failed: {} };
  readonly #o: SpliceClientOptions;
  readonly #aborts = new Set<AbortController>();
  #offersInFlight = 0;

  constructor(opts: SpliceClientOptions) {
    this.#o = opts;
  }

  get service(): SpliceService | undefined {
    return this.#o.service;
  }

  start(): void {
    void this.#o.host.handle(SPLICE_PROTOCOL, (stream, conn) => this.#handle(stream, conn), {
      maxInboundStreams: 16,
    });
  }

  stop(): void {
    for (const a of this.#aborts) a.abort(new Error('overlay stopping'));
  }

  /** Requester side: a libp2p connection to `peerId` through a relay's splice. */
  async splice(peerId: string): Promise<Connection> {
    const errors: string[] = [];
    for (const relayConn of this.#relayConnections(peerId)) {
      try {
        const conn = await this.#spliceVia(relayConn, peerId);
        this.counters.established++;
        return conn;
      } catch (err) {
        const reason = err instanceof SpliceError ? err.reason : 'error';
        this.#count(reason);
        errors.push(`${relayConn.remotePeer.toString().slice(-8)}: ${(err as Error).message}`);
      }
    }
    if (errors.length === 0) this.#count('no-relay');
    throw new Error(`no splice to the peer (${errors.join('; ') || 'no relay connection'})`);
  }

  /** Our direct connections to relay nodes of the directory (not the peer itself). */
  #relayConnections(peerId: string): Connection[] {
    const self = this.#o.host.peerId.toString();
    const out: Connection[] = [];
    for (const r of this.#o.directory.relays()) {
      if (r.peerId === peerId || r.peerId === self) continue;
      const conn = this.#o.host
        .getConnections()
        .find((c) => c.status === 'open' && !isCircuit(c.remoteAddr) && c.remotePeer.toString() === r.peerId);
      if (conn !== undefined) out.push(conn);
    }
    return out;
  }

  async #spliceVia(relayConn: Connection, peerId: string): Promise<Connection> {
    const stream = await withDeadline(5000, 'splice stream', (signal) =>
      relayConn.newStream(SPLICE_PROTOCOL, { signal }),
    );
    const channel = new SpliceChannel(stream);
    let grant: SpliceGrant;
    try {
      await channel.write({ v: 1, op: 'splice', peer: peerId });
      grant = await channel.read(SpliceGrant);
    } catch (err) {
      stream.abort(err as Error);
      throw err;
    }
    void channel.close();
    return this.#join(relayConn, grant.port, tokenBytes(grant.token), peerId, 'outbound');
  }

  async #handle(stream: Stream, conn: Connection): Promise<void> {
    const channel = new SpliceChannel(stream);
    let first: SpliceRequest | SpliceOffer;
    try {
      first = await channel.read(FirstMessage);
    } catch (err) {
      this.#count(err instanceof SpliceError ? err.reason : 'error');
      stream.abort(err as Error);
      return;
    }
    if (first.op === 'splice') {
      if (this.#o.service === undefined) {
        this.#count('not-a-relay');
        await channel.refuse('not-a-relay');
        return;
      }
      await this.#o.service.serve(channel, conn, first);
      return;
    }
    await this.#accept(channel, conn, first);
  }

  /** Peer side: a relay offers a splice with `offer.peer`; join it if the offer is sound. */
  async #accept(channel: SpliceChannel, conn: Connection, offer: SpliceOffer): Promise<void> {
    const from = this.#o.directory.byPeerId(conn.remotePeer.toString());
    let admitted = false;
    try {
      if (from?.relay !== true || isCircuit(conn.remoteAddr))
        throw new SpliceError('offer-not-from-relay', 'splice offers come from relay nodes only');
      if (!this.#o.directory.has(offer.peer) || offer.peer === this.#o.host.peerId.toString())
        throw new SpliceError('unknown-peer', 'the offered peer is not a cluster member');
      if (this.#offersInFlight >= (this.#o.maxConcurrentOffers ?? 8))
        throw new SpliceError('busy', 'too many splice offers at once');
      this.#offersInFlight++;
      admitted = true;
      await channel.write({ v: 1, ok: true });
      void channel.close();
      await this.#join(conn, offer.port, tokenBytes(offer.token), offer.peer, 'inbound');
      this.counters.accepted++;
    } catch (err) {
      const reason = err instanceof SpliceError ? err.reason : 'error';
      this.#count(reason);
      this.#o.log.info({ relay: from?.node, reason, err: (err as Error).message }, 'splice offer failed');
      if (!admitted) await channel.refuse(reason);
    } finally {
      if (admitted) this.#offersInFlight--;
    }
  }

  /** Opens TCP to the relay's splice port, presents the token, upgrades with our role. */
  async #join(
    relayConn: Connection,
    port: number,
    token: Uint8Array,
    peerId: string,
    role: 'outbound' | 'inbound',
  ): Promise<Connection> {
    const ip = ipOf(relayConn.remoteAddr);
    if (ip === undefined) throw new SpliceError('relay-address', 'cannot tell the relay address');
    const socket = await connect(ip, port);
    socket.write(token);
    const remoteAddr = ipPortToMultiaddr(ip, port).encapsulate(`/p2p/${peerId}`);
    return this.#upgrade(socket, remoteAddr, peerId, role);
  }

  async #upgrade(
    socket: net.Socket,
    remoteAddr: Multiaddr,
    peerId: string,
    role: 'outbound' | 'inbound',
  ): Promise<Connection> {
    const { internals } = this.#o;
    const maConn = socketToMultiaddrConnection({
      socket,
      remoteAddr,
      direction: role,
      log: internals.logger.forComponent('edgemesh:splice:connection'),
    });
    const abort = new AbortController();
    this.#aborts.add(abort);
    const timer = setTimeout(
      () => abort.abort(new SpliceError('upgrade-timeout', 'upgrade took too long')),
      UPGRADE_TIMEOUT_MS,
    );
    const signal = abort.signal;
    let onOpen: ((evt: CustomEvent<Connection>) => void) | undefined;
    try {
      if (role === 'outbound') {
        const conn = await internals.upgrader.upgradeOutbound(maConn, { signal, initiator: true });
        this.#o.onConnection(conn);
        return conn;
      }
      // upgradeInbound hands the connection to the connection manager and returns nothing:
      // pick it up from connection:open (synchronously, before any stream on it arrives).
      const opened = new Promise<Connection>((resolve) => {
        onOpen = (evt: CustomEvent<Connection>) => {
          const c = evt.detail;
          if (c.remotePeer.toString() !== peerId || !c.remoteAddr.equals(remoteAddr)) return;
          this.#o.onConnection(c);
          resolve(c);
        };
        internals.events.addEventListener('connection:open', onOpen);
      });
      // The expected peer ID is in remoteAddr: noise verifies it.
      await internals.upgrader.upgradeInbound(maConn, { signal });
      return await opened;
    } catch (err) {
      maConn.abort(err as Error);
      throw new SpliceError('upgrade-failed', `upgrade of the spliced socket failed: ${(err as Error).message}`);
    } finally {
      if (onOpen) internals.events.removeEventListener('connection:open', onOpen);
      clearTimeout(timer);
      this.#aborts.delete(abort);
    }
  }

  #count(reason: string): void {
    this.counters.failed[reason] = (this.counters.failed[reason] ?? 0) + 1;
  }
}

function connect(ip: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: ip, port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new SpliceError('connect-timeout', `TCP to the relay's splice port ${ip}:${port} timed out`));
    }, 5000);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new SpliceError('connect-failed', `TCP to the relay's splice port failed: ${err.message}`));
    });
  });
}
