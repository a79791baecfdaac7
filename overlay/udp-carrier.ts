// The overlay's UDP side for all peers: the node's data socket, the sessions set up over
// libp2p (overlay/udp-sessions.ts), the probing and path ladder (overlay/udp-paths.ts) and
// the candidate endpoints we offer. overlay/overlay.ts asks it three things per peer: does
// UDP carry this peer now, send these packets, which path does status show.
import { networkInterfaces } from 'node:os';
import type { Connection } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Packet } from '../dataplane/types.ts';
import { ipOf } from './addresses.ts';
import type { PeerDirectory } from './directory.ts';
import type { Host } from './host.ts';
import type { PathKind } from './overlay.ts';
import { type LadderTuning, type StreamPathKind, type TransportMode, visiblePath } from './path-ladder.ts';
import { isUsableCandidateIp } from './session-protocol.ts';
import { type UdpPathCounters, UdpPaths } from './udp-paths.ts';
import { type RelayAllocateArgs, UdpRelayPath, type UdpRelayPathCounters } from './udp-relay-path.ts';
import { type UdpSessionCounters, UdpSessions } from './udp-sessions.ts';
import { type DataSocketLike, endpointKey, type UdpEndpoint } from './udp-types.ts';

export interface UdpSocketHandlers {
  onPackets(localIndex: number, packets: Packet[], from: UdpEndpoint): void;
  onControl(localIndex: number, message: Uint8Array, from: UdpEndpoint): void;
}

/** How the overlay gets the node's UDP data socket (the agent opens the native one). */
export interface UdpSocketFactory {
  open(handlers: UdpSocketHandlers): DataSocketLike & { readonly mtu?: number; close(): void };
  /** The AEAD the socket runs (both ends must match). Default 'aes-256-gcm'. */
  cipher?: string;
  /** Builds UDP relay allocate datagrams (dataplane/udp-relay.ts); absent: no udp-relayed rung. */
  allocateDatagram?: (a: RelayAllocateArgs) => Uint8Array;
}

export interface UdpCarrierOptions {
  factory: UdpSocketFactory;
  host: Host;
  directory: PeerDirectory;
  log: Logger;
  mode: TransportMode;
  connectionTo: (node: string) => Promise<Connection>;
  /** Our public IP as a relay observes it (undefined when unknown). */
  publicIp: () => Promise<string>;
  /** The public IP a relay sees `peerId` connect from (rejects when no relay knows). */
  observedIpOf: (peerId: string) => Promise<string>;
  selfPublic: () => boolean;
  /** IPs we announce (multiaddrs): a public node's address may not sit on an interface. */
  announcedIps: () => string[];
  /** Interfaces whose addresses are never offered (the TUN, the pod bridge). */
  excludeInterfaces?: string[];
  /** Packets that arrived on a peer's session (opened, authentic). */
  onPackets: (node: string, packets: Packet[]) => void;
  /** UDP started or stopped carrying a node's traffic, or its UDP path changed. */
  onChange: (node: string) => void;
  /** Whether the node's stream tunnel is up (the ladder's hold-down needs a carrier to hold to). */
  streamUp?: (node: string) => boolean;
  rekeyAfterMs?: number;
  graceMs?: number;
  tuning?: LadderTuning;
  keepaliveMs?: number;
}

export interface UdpCarrierCounters {
  sessions: UdpSessionCounters;
  paths: UdpPathCounters;
  /** Datagrams for an index no session owns any more. */
  unknownIndex: number;
  /** Packets the forwarder threw on (counted, the socket keeps running). */
  receiveErrors: number;
  /** Datagrams the native socket refused (forged, replayed, truncated, unknown index...), by reason. */
  socketDrops: Record<string, number>;
  /** The udp-relayed rung (absent when the socket cannot use UDP relays). */
  relay?: UdpRelayPathCounters;
}

export class UdpCarrier {
  readonly socket: DataSocketLike & { readonly mtu?: number; close(): void };
  readonly sessions: UdpSessions;
  readonly paths: UdpPaths;
  readonly relay: UdpRelayPath | undefined;
  readonly #o: UdpCarrierOptions;
  #observedIp: string | undefined;
  readonly #timer: NodeJS.Timeout;
  #unknownIndex = 0;
  #receiveErrors = 0;
  readonly #failedAt = new Map<string, number>();

  constructor(opts: UdpCarrierOptions) {
    this.#o = opts;
    this.socket = opts.factory.open({
      onPackets: (localIndex, packets) => this.#onPackets(localIndex, packets),
      onControl: (localIndex, message, from) => this.paths.onControl(localIndex, message, from),
    });
    this.sessions = new UdpSessions({
      host: opts.host,
      directory: opts.directory,
      socket: this.socket,
      cipher: opts.factory.cipher ?? 'aes-256-gcm',
      localEndpoints: () => this.localEndpoints(),
      connectionTo: opts.connectionTo,
      log: opts.log,
      onEstablished: (s) => this.paths.sessionEstablished(s),
      onLost: (node) => this.paths.sessionLost(node),
      enabled: () => opts.mode !== 'stream',
      filterCandidates: (node, candidates) => this.#filterCandidates(node, candidates),
      ...(opts.rekeyAfterMs === undefined ? {} : { rekeyAfterMs: opts.rekeyAfterMs }),
      ...(opts.graceMs === undefined ? {} : { graceMs: opts.graceMs }),
    });
    const socket = this.socket;
    const allocateDatagram = opts.factory.allocateDatagram;
    this.relay =
      allocateDatagram !== undefined && socket.sendRelayAllocate !== undefined
        ? new UdpRelayPath({
            directory: opts.directory,
            selfPeerId: opts.host.peerId.toString(),
            sendAllocate: (relay, datagram) => socket.sendRelayAllocate!(relay, datagram),
            allocateDatagram,
            connectionTo: opts.connectionTo,
            ackAgeMs: (node) => {
              const f = this.paths.facts(node);
              const at = f?.lastRxAt ?? f?.confirmedAt;
              return at === undefined ? undefined : Date.now() - at;
            },
            probeSoon: (node) => this.paths.probeSoon(node),
            log: opts.log,
          })
        : undefined;
    this.paths = new UdpPaths({
      socket: this.socket,
      nodeOf: (i) => this.sessions.nodeOf(i),
      mode: () => opts.mode,
      publicness: (node) => ({
        self: opts.selfPublic(),
        peer: (opts.directory.get(node)?.publicAddrs.length ?? 0) > 0,
      }),
      log: opts.log,
      onChange: opts.onChange,
      onUnanswered: (node) => {
        this.#o.log.info({ peer: node }, 'UDP candidates unanswered: new handshake with fresh candidates');
        void this.#refreshObservedIp().then(() => this.sessions.rekey(node));
      },
      ...(opts.tuning === undefined ? {} : { tuning: opts.tuning }),
      ...(opts.keepaliveMs === undefined ? {} : { keepaliveMs: opts.keepaliveMs }),
      ...(this.relay === undefined ? {} : { relay: this.relay }),
      ...(opts.streamUp === undefined ? {} : { streamUp: opts.streamUp }),
    });
    void this.#refreshObservedIp();
    this.#timer = setInterval(() => void this.#refreshObservedIp(), 30_000);
    this.#timer.unref();
  }

  get port(): number {
    return this.socket.port;
  }

  /** Sets a session up with `node` (no-op when one exists, a handshake runs, or it failed recently). */
  ensure(node: string): void {
    if (this.#o.mode === 'stream' || this.sessions.current(node) !== undefined) return;
    const failed = this.#failedAt.get(node);
    if (failed !== undefined && Date.now() - failed < 10_000) return;
    void this.sessions.ensure(node).then((s) => {
      if (s === undefined) this.#failedAt.set(node, Date.now());
      else this.#failedAt.delete(node);
    });
  }

  carries(node: string): boolean {
    return this.#o.mode !== 'stream' && this.paths.carries(node);
  }

  /** Seals and sends on the node's current session; returns the packets accepted. */
  send(node: string, packets: Packet[]): number {
    const idx = this.paths.txIndex(node);
    return idx === undefined ? 0 : this.socket.send(idx, packets);
  }

  get mtu(): number | undefined {
    return this.socket.mtu;
  }

  /** The path status shows, given the stream tunnel's path. */
  pathOf(node: string, stream: StreamPathKind): PathKind {
    const ladder = this.paths.ladder(node);
    if (ladder === undefined || this.#o.mode === 'stream') return stream;
    return visiblePath(ladder, this.paths.facts(node), stream, Date.now(), this.#o.tuning);
  }

  endpointText(node: string): string | undefined {
    const ep = this.paths.endpointOf(node);
    return ep === undefined ? undefined : `udp://${endpointKey(ep)}`;
  }

  drop(node: string): void {
    this.sessions.drop(node);
    this.paths.sessionLost(node);
    this.#failedAt.delete(node);
  }

  counters(): UdpCarrierCounters {
    return {
      sessions: { ...this.sessions.counters, handshakeFailures: { ...this.sessions.counters.handshakeFailures } },
      paths: { ...this.paths.counters },
      unknownIndex: this.#unknownIndex,
      receiveErrors: this.#receiveErrors,
      socketDrops: { ...(this.socket.stats?.().drops ?? {}) },
      ...(this.relay === undefined
        ? {}
        : { relay: { ...this.relay.counters, grantFailures: { ...this.relay.counters.grantFailures } } }),
    };
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.paths.stop();
    this.relay?.stop();
    await this.sessions.stop();
    this.socket.close();
  }

  /** Our candidates: interface addresses, announced IPs and the relay-observed public IP, on our UDP port. */
  async localEndpoints(): Promise<UdpEndpoint[]> {
    if (this.#observedIp === undefined) await this.#refreshObservedIp();
    const exclude = new Set(this.#o.excludeInterfaces ?? []);
    const ips = new Set<string>();
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      if (exclude.has(name)) continue;
      for (const a of addrs ?? []) if (!a.internal) ips.add(a.address);
    }
    for (const ip of this.#o.announcedIps()) ips.add(ip);
    if (this.#observedIp !== undefined) ips.add(this.#observedIp);
    const port = this.socket.port;
    return [...ips]
      .filter(isUsableCandidateIp)
      .slice(0, 16)
      .map((ip) => ({ ip, port }));
  }

  /**
   * A peer's candidates we probe: its own addresses as the directory knows them (node IP,
   * multiaddrs) and the address a relay sees it connect from. Anything else would let a
   * member aim our probes at third parties; a NAT mapping we do not know yet is learned from
   * the peer's own (authenticated) probes instead.
   */
  async #filterCandidates(node: string, candidates: UdpEndpoint[]): Promise<UdpEndpoint[]> {
    const peer = this.#o.directory.get(node);
    if (peer === undefined) return [];
    const allowed = new Set<string>([peer.nodeIp, ...peer.multiaddrs.map((m) => ipOf(m) ?? '')]);
    if (candidates.some((c) => !allowed.has(c.ip))) {
      try {
        allowed.add(await this.#o.observedIpOf(peer.peerId));
      } catch {
        // no relay can vouch for another address: the directory's addresses only
      }
    }
    return candidates.filter((c) => allowed.has(c.ip));
  }

  async #refreshObservedIp(): Promise<void> {
    if (this.#o.selfPublic()) return;
    try {
      this.#observedIp = await this.#o.publicIp();
    } catch {
      // no relay connection yet: the next refresh (or the interface addresses) will do
    }
  }

  #onPackets(localIndex: number, packets: Packet[]): void {
    const node = this.sessions.nodeOf(localIndex);
    if (node === undefined) {
      this.#unknownIndex += packets.length;
      return;
    }
    this.paths.onData(localIndex);
    try {
      this.#o.onPackets(node, packets);
    } catch {
      this.#receiveErrors++;
    }
  }
}
