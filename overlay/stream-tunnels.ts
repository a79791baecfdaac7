// The stream tunnels of the peer sessions: opening one on a connection, taking the peer's
// inbound ones, handing a session's link to the forwarder once a tunnel is ready and taking
// it back when the last one closes (UDP not carrying the peer).
import type { Connection, Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import { withDeadline } from './deadline.ts';
import type { PeerInfo } from './directory.ts';
import type { Host } from './host.ts';
import type { ForwarderLike } from './overlay-types.ts';
import type { PeerSession, PeerSessions } from './peer-session.ts';
import { punchRetryDelayMs } from './punch-schedule.ts';
import { TUNNEL_PROTOCOL, type TunnelCaps, TunnelStream } from './tunnel.ts';

export interface StreamTunnelsDeps {
  host: Pick<Host, 'handle'>;
  directory: { byPeerId(peerId: string): PeerInfo | undefined };
  sessions: PeerSessions;
  /** Our capabilities announced in the tunnel handshake. */
  caps: TunnelCaps;
  /** Bound of each tunnel's send queue (TunnelStream's default when absent). */
  maxQueueBytes?: number;
  forwarder: Pick<ForwarderLike, 'attachLink' | 'detachLink' | 'receive'>;
  /** Whether a connection runs over a relay's TCP splice. */
  isSpliced(connectionId: string): boolean;
  /** The tunnel moved bytes on the connection (keepalive counts it as life). */
  noteTraffic(connectionId: string): void;
  udpCarries(node: string): boolean;
  /** A tunnel came up or went down: the peer's path may have changed. */
  onPathMaybeChanged(session: PeerSession): void;
  /** An inbound tunnel over a relay became ready (the peer may be reachable directly). */
  onRelayedInbound(session: PeerSession, peer: PeerInfo): void;
  log: Logger;
}

export interface StreamTunnelCounters {
  /** Frames the peer sent that the forwarder rejected (stream reset). */
  badFrames: number;
  /** Frame headers the tunnel reader refused before buffering a body (garbage, oversized; stream reset). */
  badFrameHeaders: number;
  opened: number;
}

export class StreamTunnels {
  readonly #d: StreamTunnelsDeps;
  readonly counters: StreamTunnelCounters = { badFrames: 0, badFrameHeaders: 0, opened: 0 };

  constructor(deps: StreamTunnelsDeps) {
    this.#d = deps;
  }

  /** Takes the peers' inbound tunnel streams from now on. */
  listen(): void {
    void this.#d.host.handle(TUNNEL_PROTOCOL, (stream, conn) => this.#onInbound(stream, conn), {
      runOnLimitedConnection: true,
      maxInboundStreams: 8,
      maxOutboundStreams: 8,
    });
  }

  /** Opens a tunnel stream on `conn` and resolves once its handshake is done. */
  async open(session: PeerSession, conn: Connection): Promise<TunnelStream> {
    const stream = await withDeadline(10_000, 'tunnel stream', (signal) =>
      conn.newStream(TUNNEL_PROTOCOL, { runOnLimitedConnection: true, signal }),
    );
    const tunnel = this.#add(session, stream, conn);
    await raceTimeout(tunnel.ready, 10_000, 'tunnel handshake timed out');
    return tunnel;
  }

  /** Hands the session's link to the forwarder (once; never for a session dropped meanwhile). */
  attach(session: PeerSession): void {
    // A session dropped meanwhile (the peer left) must not leave a link behind.
    if (session.attached || this.#d.sessions.get(session.node) !== session) return;
    // The forwarder keeps a link that comes before the peer's pod CIDRs are routed.
    this.#d.forwarder.attachLink(session.node, session.link);
    session.attached = true;
  }

  #onInbound(stream: Stream, conn: Connection): void {
    const peer = this.#d.directory.byPeerId(conn.remotePeer.toString());
    if (peer === undefined) {
      // The gater already refused strangers; a peer removed since then lands here.
      stream.abort(new Error('peer is not in the directory'));
      return;
    }
    const session = this.#d.sessions.obtain(peer);
    const tunnel = this.#add(session, stream, conn);
    tunnel.ready
      .then(() => {
        if (!tunnel.direct) this.#d.onRelayedInbound(session, peer);
      })
      .catch(() => {});
  }

  #add(session: PeerSession, stream: Stream, conn: Connection): TunnelStream {
    const d = this.#d;
    const tunnel = new TunnelStream({
      stream,
      connection: conn,
      localCaps: d.caps,
      ...(d.maxQueueBytes === undefined ? {} : { maxQueueBytes: d.maxQueueBytes }),
      spliced: d.isSpliced(conn.id),
      onFrame: (frame) => {
        session.rxBytes += frame.length;
        session.lastSeen = Date.now();
        try {
          d.forwarder.receive(session.node, frame);
        } catch (err) {
          this.counters.badFrames++;
          throw err; // TunnelStream resets the stream
        }
      },
      onClose: (t, err) => {
        this.counters.badFrameHeaders += t.badFrames; // garbage its reader refused before the forwarder saw it
        this.#onClosed(session, t, err);
      },
      onProgress: () => d.noteTraffic(conn.id),
    });
    this.counters.opened++;
    session.tunnels.add(tunnel);
    tunnel.ready
      .then(() => {
        session.lastSeen = Date.now();
        this.attach(session);
        d.onPathMaybeChanged(session);
      })
      .catch(() => {});
    return tunnel;
  }

  #onClosed(session: PeerSession, tunnel: TunnelStream, err?: Error): void {
    const d = this.#d;
    session.tunnels.delete(tunnel);
    // A direct path just died: give the NATs a moment before punching again.
    if (tunnel.direct) session.nextPunchAt = Math.max(session.nextPunchAt, Date.now() + punchRetryDelayMs(1));
    d.log.info(
      { peer: session.node, direct: tunnel.direct, err: err?.message, remote: tunnel.connection.remoteAddr.toString() },
      'tunnel stream closed',
    );
    if (session.tunnels.size === 0 && session.attached && !d.udpCarries(session.node)) {
      // Detach so the forwarder's next packet for this peer asks us to connect again.
      session.attached = false;
      d.forwarder.detachLink(session.node);
    }
    d.onPathMaybeChanged(session);
  }
}

function raceTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
