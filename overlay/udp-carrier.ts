// The overlay's UDP side for all peers: the node's data socket, the sessions set up over
// libp2p (overlay/udp-sessions.ts), the probing and path ladder (overlay/udp-paths.ts) and
// the candidate endpoints we offer. overlay/overlay.ts asks it three things per peer: does
// UDP carry this peer now, send these packets, which path does status show.
import { networkInterfaces } from 'node:os';
import type { Connection } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Packet } from '../dataplane/types.ts';
import { ipOf, isPublicIp } from './addresses.ts';
import type { PeerDirectory } from './directory.ts';
import type { Host } from './host.ts';
import type { NatKind } from './nat-kind.ts';
import type { PathKind } from './path-kind.ts';
import { type LadderTuning, type StreamPathKind, type TransportMode, visiblePath } from './path-ladder.ts';
import { isBindingMessage, NatReflection, type ReflectionCounters } from './reflection.ts';
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
  /** Reflection tuning (tests). */
  reflectionRefreshMs?: number;
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
  /** Binding requests and answers (both roles). */
  reflection: ReflectionCounters;
  /** Our NAT kind as the reflectors' answers show it. */
  natKind: NatKind;
  /** New handshakes with peers that were not direct, started because our mapping changed. */
  mappingRetries: number;
  /** The udp-relayed rung (absent when the socket cannot use UDP relays). */
  relay?: UdpRelayPathCounters;
}

/** How long a relay's word on a peer's public IP is reused for that peer's handshakes. */
const VOUCHED_TTL_MS = 60_000;

export class UdpCarrier {
  readonly socket: DataSocketLike & { readonly mtu?: number; close(): void };
  readonly sessions: UdpSessions;
  readonly paths: UdpPaths;
  readonly reflection: NatReflection;
  readonly relay: UdpRelayPath | undefined;
  readonly #o: UdpCarrierOptions;
  #mappingRetries = 0;
  #observedIp: string | undefined;
  readonly #timer: NodeJS.Timeout;
  #unknownIndex = 0;
  #receiveErrors = 0;
  readonly #failedAt = new Map<string, number>();
  /** Where a relay last saw each peer connect from (bounded; entries older than VOUCHED_TTL_MS are asked again). */
  readonly #vouched = new Map<string, { ip: string | undefined; at: number; pending?: Promise<string | undefined> }>();

  constructor(opts: UdpCarrierOptions) {
    this.#o = opts;
    this.socket = opts.factory.open({
      onPackets: (localIndex, packets) => this.#onPackets(localIndex, packets),
      onControl: (localIndex, message, from) =>
        isBindingMessage(message)
          ? this.reflection.onMessage(localIndex, message, from)
          : this.paths.onControl(localIndex, message, from),
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
      natKind: () => this.reflection.kind,
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
      vouchedIp: (node) => {
        const peer = opts.directory.get(node);
        return peer === undefined ? Promise.resolve(undefined) : this.#vouch(peer.peerId);
      },
    });
    this.reflection = new NatReflection({
      socket: this.socket,
      nodeOf: (i) => this.sessions.nodeOf(i),
      selfPublic: opts.selfPublic,
      reflectors: () => this.#reflectors(),
      ensureSession: (node) => this.sessions.ensure(node),
      txIndexOf: (node) => this.paths.txIndex(node),
      targetsOf: (node) => {
        const ep = this.paths.endpointOf(node);
        if (ep !== undefined) return [ep];
        return (this.sessions.current(node)?.candidates ?? []).filter((c) => isPublicIp(c.ip));
      },
      localIps: () => this.#localIps(),
      onChange: () => this.#retryNotDirect(),
      log: opts.log,
      ...(opts.reflectionRefreshMs === undefined ? {} : { refreshMs: opts.reflectionRefreshMs }),
    });
    if (opts.mode !== 'stream') this.reflection.start();
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
    // A NAT'd peer offers its public address, which only a relay can vouch for: ask now, while
    // the handshake's streams are opened, rather than after its answer.
    const peer = this.#o.directory.get(node);
    if (peer !== undefined && peer.publicAddrs.length === 0) void this.#vouch(peer.peerId);
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

  /** Milliseconds from the first UDP session with the node to its first working UDP path. */
  msToDirect(node: string): number | undefined {
    return this.paths.msToDirect(node);
  }

  get natKind(): NatKind {
    return this.reflection.kind;
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
      paths: {
        ...this.paths.counters,
        ...(this.paths.counters.birthday === undefined ? {} : { birthday: { ...this.paths.counters.birthday } }),
      },
      unknownIndex: this.#unknownIndex,
      receiveErrors: this.#receiveErrors,
      socketDrops: { ...(this.socket.stats?.().drops ?? {}) },
      reflection: { ...this.reflection.counters },
      natKind: this.reflection.kind,
      mappingRetries: this.#mappingRetries,
      ...(this.relay === undefined
        ? {}
        : { relay: { ...this.relay.counters, grantFailures: { ...this.relay.counters.grantFailures } } }),
    };
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.reflection.stop();
    this.paths.stop();
    this.relay?.stop();
    await this.sessions.stop();
    this.socket.close();
  }

  /**
   * Our candidates: the reflected mappings (what peers behind other NATs can reach), then
   * interface addresses, announced IPs and the relay-observed public IP, on our UDP port.
   */
  async localEndpoints(): Promise<UdpEndpoint[]> {
    const reflected = this.reflection.candidates().filter((e) => isUsableCandidateIp(e.ip));
    // A reflected mapping already names our public IP: no round trip to a relay first.
    if (this.#observedIp === undefined && reflected.length === 0) await this.#refreshObservedIp();
    const ips = this.#localIps();
    for (const ip of this.#o.announcedIps()) ips.add(ip);
    if (this.#observedIp !== undefined) ips.add(this.#observedIp);
    // The public IP with our own port too: what a port-preserving NAT gives a new destination.
    for (const e of reflected) ips.add(e.ip);
    const port = this.socket.port;
    const out: UdpEndpoint[] = reflected;
    for (const ip of ips) {
      if (isUsableCandidateIp(ip) && !out.some((e) => e.ip === ip && e.port === port)) out.push({ ip, port });
    }
    return out.slice(0, 16);
  }

  #localIps(): Set<string> {
    const exclude = new Set(this.#o.excludeInterfaces ?? []);
    const ips = new Set<string>();
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      if (exclude.has(name)) continue;
      for (const a of addrs ?? []) if (!a.internal) ips.add(a.address);
    }
    return ips;
  }

  /** Public members (relays first) that can tell us our mapping: not us, at most a few. */
  #reflectors(): string[] {
    const self = this.#o.host.peerId.toString();
    return this.#o.directory
      .list()
      .filter((p) => p.peerId !== self && p.publicAddrs.length > 0)
      .sort((a, b) => Number(b.relay) - Number(a.relay) || a.node.localeCompare(b.node))
      .map((p) => p.node);
  }

  /** Our mapping changed: peers whose UDP path is not up get a handshake with the new candidates. */
  #retryNotDirect(): void {
    const now = Date.now();
    for (const node of this.sessions.nodes()) {
      if (this.paths.alive(node, now)) continue;
      this.#mappingRetries++;
      this.#o.log.info({ peer: node }, 'our UDP mapping changed: new handshake with fresh candidates');
      void this.sessions.rekey(node);
    }
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
      const cached = this.#vouched.get(peer.peerId);
      const covers = cached?.ip !== undefined && candidates.every((c) => allowed.has(c.ip) || c.ip === cached.ip);
      // A relay told us this address recently (or is being asked now, see ensure()): a rekey,
      // a retry or a handshake that crossed the prefetch needs no round trip of its own.
      const ip =
        covers && Date.now() - cached!.at < VOUCHED_TTL_MS ? cached!.ip : await this.#vouch(peer.peerId, !covers);
      if (ip !== undefined) allowed.add(ip);
    }
    return candidates.filter((c) => allowed.has(c.ip));
  }

  /**
   * The public IP a relay sees `peerId` connect from; one query per peer at a time (a handshake
   * joins the query ensure() started). `fresh`: do not reuse a finished answer.
   */
  #vouch(peerId: string, fresh = false): Promise<string | undefined> {
    const entry = this.#vouched.get(peerId);
    if (entry?.pending !== undefined) return entry.pending;
    if (!fresh && entry?.ip !== undefined && Date.now() - entry.at < VOUCHED_TTL_MS) return Promise.resolve(entry.ip);
    const pending = this.#o.observedIpOf(peerId).then(
      (ip) => {
        this.#vouched.set(peerId, { ip, at: Date.now() });
        return ip;
      },
      () => {
        // no relay can vouch for another address: the directory's addresses only
        this.#vouched.delete(peerId);
        return undefined;
      },
    );
    this.#vouched.set(peerId, { ip: entry?.ip, at: entry?.at ?? 0, pending });
    if (this.#vouched.size > 4096) this.#vouched.delete(this.#vouched.keys().next().value!);
    return pending;
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
