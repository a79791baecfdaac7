// What the overlay holds per remote node: its tunnel streams (one per path), the PeerLink the
// forwarder sends on, the per-peer schedules of the punch and the splice, and the figures
// status reports; and the table of them, one session per node and peer id.
import type { Packet, PeerLink } from '../dataplane/types.ts';
import type { PeerInfo } from './directory.ts';
import type { PathKind } from './path-kind.ts';
import type { TunnelStream } from './tunnel.ts';

/** What a PeerSession's link needs from the UDP side. */
export interface UdpLinkHooks {
  carries(node: string): boolean;
  send(node: string, packets: Packet[]): number;
  readonly mtu: number | undefined;
}

/** Per remote node: its tunnel streams (one per path) and the PeerLink the forwarder holds. */
export class PeerSession {
  readonly node: string;
  readonly peerId: string;
  readonly tunnels = new Set<TunnelStream>();
  connecting: Promise<void> | undefined;
  punching = false;
  nextPunchAt = 0;
  punchFailures = 0;
  splicing = false;
  nextSpliceAt = 0;
  spliceFailures = 0;
  /** Since when only a circuit-relay tunnel carries the peer (0: not the case). */
  circuitOnlySince = 0;
  rttMs: number | undefined;
  txBytes = 0;
  rxBytes = 0;
  drops = 0;
  lastSeen: number | undefined;
  lastPath: PathKind = 'none';
  /** When lastPath was taken (epoch ms; 0: never changed). */
  pathSince = 0;
  attached = false;
  /** Last UDP packet either way (epoch ms), for idle close. */
  udpActivity = 0;
  readonly link: PeerLink & { readonly offload: boolean };

  constructor(node: string, peerId: string, udp: UdpLinkHooks | undefined) {
    this.node = node;
    this.peerId = peerId;
    const session = this;
    const sendPackets = (packets: Packet[]): number => {
      const n = udp!.send(node, packets);
      for (let i = 0; i < n; i++) session.txBytes += packets[i]!.data.length;
      if (n < packets.length) session.drops += packets.length - n;
      session.udpActivity = Date.now();
      return n;
    };
    this.link = {
      // Present only while UDP carries this peer: the forwarder asks per batch, and falls
      // back to frames on the stream tunnel when it is absent.
      get sendPackets() {
        return udp?.carries(node) ? sendPackets : undefined;
      },
      get mtu() {
        return udp?.carries(node) ? udp.mtu : undefined;
      },
      send: (frame) => {
        const tunnel = session.preferred();
        const ok = tunnel?.send(frame) ?? false;
        if (ok) session.txBytes += frame.length;
        else session.drops++;
        return ok;
      },
      get offload() {
        return session.preferred()?.caps?.offload ?? false;
      },
    };
  }

  /** The tunnel to send on: a ready one, direct before spliced before circuit-relayed, the newest first. */
  preferred(): TunnelStream | undefined {
    let best: TunnelStream | undefined;
    for (const t of this.tunnels) {
      if (t.closed || t.caps === undefined) continue;
      if (best === undefined || tunnelRank(t) >= tunnelRank(best)) best = t;
    }
    return best;
  }
}

/** Direct before spliced before circuit-relayed. */
function tunnelRank(t: TunnelStream): number {
  return t.direct ? 2 : t.spliced ? 1 : 0;
}

export interface PeerSessionsDeps {
  /** The UDP side new sessions send on; asked when a session is made (the carrier opens after the table). */
  udp(): UdpLinkHooks | undefined;
  detachLink(node: string): void;
  /** A session was dropped (its tunnels aborted, its link detached): release what else it holds. */
  onDropped(session: PeerSession): void;
}

/** The sessions by node name: one per node, made anew when the node's peer id changes. */
export class PeerSessions {
  readonly #deps: PeerSessionsDeps;
  readonly #byNode = new Map<string, PeerSession>();

  constructor(deps: PeerSessionsDeps) {
    this.#deps = deps;
  }

  get(node: string): PeerSession | undefined {
    return this.#byNode.get(node);
  }

  values(): IterableIterator<PeerSession> {
    return this.#byNode.values();
  }

  nodes(): string[] {
    return [...this.#byNode.keys()];
  }

  /** The node's session, made if missing; a session for an older peer id of the node is dropped first. */
  obtain(peer: PeerInfo): PeerSession {
    let session = this.#byNode.get(peer.node);
    if (session === undefined || session.peerId !== peer.peerId) {
      if (session !== undefined) this.drop(peer.node);
      session = new PeerSession(peer.node, peer.peerId, this.#deps.udp());
      this.#byNode.set(peer.node, session);
    }
    return session;
  }

  drop(node: string, why = 'peer left the directory'): void {
    const session = this.#byNode.get(node);
    if (session === undefined) return;
    this.#byNode.delete(node);
    for (const t of session.tunnels) t.abort(new Error(why));
    if (session.attached) this.#deps.detachLink(node);
    session.attached = false;
    this.#deps.onDropped(session);
  }
}
