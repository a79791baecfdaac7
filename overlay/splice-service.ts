// The relay node's side of /edgemesh/splice/1.0.0 (docs/stream-relay.md): a member asks for
// a splice to another member; the relay checks both are members and that it holds a direct
// connection to each, issues a pair of one-time tokens on its SpliceRelay (each bound to the
// address that member's connection comes from), offers B its token over the relay's
// connection to B, and on B's yes answers A with A's token. The requester is who its noise
// connection says it is; it can only ask for itself, and only gets its own token.
import type { Connection } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Logger } from 'pino';
import { ipOf, isCircuit } from './addresses.ts';
import { withDeadline } from './deadline.ts';
import type { Host } from './host.ts';
import {
  OfferAnswer,
  SPLICE_PROTOCOL,
  SpliceChannel,
  type SpliceOffer,
  type SpliceRequest,
  tokenText,
} from './splice-messages.ts';
import { SpliceError, type SpliceRelay } from './splice-relay.ts';

export interface SpliceServiceCounters {
  /** Requests answered with a token. */
  granted: number;
  /** Requests refused, by reason: not-member, unknown-peer, peer-unreachable, member-full, offer refused, ... */
  refused: Record<string, number>;
}

export interface SpliceServiceOptions {
  host: Host;
  relay: SpliceRelay;
  isMember(peerId: string): boolean;
  log: Logger;
}

export class SpliceService {
  readonly counters: SpliceServiceCounters = { granted: 0, refused: {} };
  readonly #o: SpliceServiceOptions;

  constructor(opts: SpliceServiceOptions) {
    this.#o = opts;
  }

  get relay(): SpliceRelay {
    return this.#o.relay;
  }

  /** Serves one request whose first message was already read from `channel`. */
  async serve(channel: SpliceChannel, conn: Connection, req: SpliceRequest): Promise<void> {
    const requester = conn.remotePeer.toString();
    try {
      if (!this.#o.isMember(requester)) throw new SpliceError('not-member', 'not a cluster member');
      if (isCircuit(conn.remoteAddr)) throw new SpliceError('not-direct', 'ask over a direct connection');
      if (req.peer === requester || req.peer === this.#o.host.peerId.toString() || !this.#o.isMember(req.peer))
        throw new SpliceError('unknown-peer', 'the other peer is not a cluster member');
      const toPeer = this.#o.host
        .getConnections(peerIdFromString(req.peer))
        .find((c) => c.status === 'open' && !isCircuit(c.remoteAddr));
      if (toPeer === undefined) throw new SpliceError('peer-unreachable', 'the relay holds no connection to the peer');
      const [tokenA, tokenB] = this.#o.relay.issue(
        { peer: requester, ip: ipOf(conn.remoteAddr) },
        { peer: req.peer, ip: ipOf(toPeer.remoteAddr) },
      );
      const port = this.#o.relay.port;
      await this.#offer(toPeer, { v: 1, op: 'offer', peer: requester, token: tokenText(tokenB), port }).catch(
        (err: Error) => {
          this.#o.relay.revoke(tokenA);
          throw err;
        },
      );
      await channel.write({ v: 1, token: tokenText(tokenA), port });
      await channel.close();
      this.counters.granted++;
      this.#o.log.debug({ requester, peer: req.peer }, 'splice granted');
    } catch (err) {
      const reason = err instanceof SpliceError ? err.reason : 'error';
      this.counters.refused[reason] = (this.counters.refused[reason] ?? 0) + 1;
      this.#o.log.info({ requester, peer: req.peer, reason, err: (err as Error).message }, 'splice refused');
      await channel.refuse(reason);
    }
  }

  async #offer(conn: Connection, offer: SpliceOffer): Promise<void> {
    const stream = await withDeadline(5000, 'splice offer stream', (signal) =>
      conn.newStream(SPLICE_PROTOCOL, { signal }),
    ).catch((err: Error) => {
      throw new SpliceError('offer-failed', err.message);
    });
    const channel = new SpliceChannel(stream);
    try {
      await channel.write(offer);
      await channel.read(OfferAnswer);
    } catch (err) {
      stream.abort(err as Error);
      throw err instanceof SpliceError ? new SpliceError(`offer-${err.reason}`.slice(0, 64), err.message) : err;
    }
    await channel.close();
  }
}
