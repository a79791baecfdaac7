// The overlay: one libp2p host per node, one tunnel per remote node that has traffic,
// over the best path the directory allows (direct, hole-punched, relayed), moving between
// paths by itself. The forwarder sees one PeerLink per peer whatever the path underneath.
// With a UDP data socket (overlay/udp-carrier.ts) the link carries packets on the peer's UDP
// session whenever the path ladder says UDP works, and the stream tunnel is the fallback.
import { EventEmitter } from 'node:events';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Logger } from 'pino';
import { silentLogger } from '../common/log.ts';
import { isPublicIp } from './addresses.ts';
import { serveRelayBindings } from './binding-grants.ts';
import { openCarrier } from './carrier-wiring.ts';
import { Dialer } from './dialer.ts';
import type { PeerDirectory, PeerInfo } from './directory.ts';
import type { GateCounters } from './gater.ts';
import { HolePunch } from './hole-punch.ts';
import { createHost, type Host } from './host.ts';
import { handleKeepalive } from './keepalive.ts';
import { internalsOf } from './libp2p-internals.ts';
import { Liveness } from './liveness.ts';
import type { NatKind } from './nat-kind.ts';
import { loadOrCreateNodeKey } from './node-key.ts';
import { serveObservedAddress } from './observed-address.ts';
import type { OverlayCounters, OverlayEvents, OverlayOptions, OverlayPeerStatus } from './overlay-types.ts';
import type { PathKind } from './path-kind.ts';
import type { StreamPathKind } from './path-ladder.ts';
import { PathPlanner } from './path-planner.ts';
import type { PathPlan } from './path-policy.ts';
import { type PeerSession, PeerSessions } from './peer-session.ts';
import { PunchScheduler } from './punch-scheduler.ts';
import type { RelayBindingService } from './relay-binding.ts';
import { ReservationKeeper } from './reservations.ts';
import { SplicePath } from './splice-path.ts';
import { StreamTunnels } from './stream-tunnels.ts';
import type { TunnelCaps } from './tunnel.ts';
import type { UdpCarrier } from './udp-carrier.ts';

export type {
  ForwarderLike,
  OverlayCounters,
  OverlayEvents,
  OverlayOptions,
  OverlayPeerStatus,
} from './overlay-types.ts';

export interface Overlay {
  peerId: string;
  multiaddrs(): string[];
  connect(node: string): Promise<void>;
  pathOf(node: string): PathKind;
  status(): OverlayPeerStatus[];
  /** One peer's entry of status() (`path` when the caller has it already); undefined for an unknown node. */
  statusOf(node: string, path?: PathKind): OverlayPeerStatus | undefined;
  counters(): OverlayCounters;
  /** Runs a hole punch to a peer now (we lead it) and resolves with the resulting path. */
  punchNow(node: string): Promise<PathKind>;
  /** Relay nodes on which we hold a circuit-relay reservation now. */
  reservations(): string[];
  /** The path policy's plan for a peer (for status and tests). */
  planFor(node: string): PathPlan;
  /** Negotiated tunnel capabilities with a peer (undefined when no tunnel is up). */
  capsOf(node: string): TunnelCaps | undefined;
  stop(): Promise<void>;
  /** The libp2p host, for tests and diagnostics. */
  readonly host: Host;
  /** Path changes as they happen. */
  readonly events: EventEmitter<OverlayEvents>;
  /** The UDP data socket's port (undefined without one). */
  udpPort(): number | undefined;
  /** Our NAT kind as reflection shows it (undefined without a UDP socket). */
  natKind(): NatKind | undefined;
}

export async function createOverlay(opts: OverlayOptions): Promise<Overlay> {
  const log = opts.logger ?? silentLogger();
  const key = await loadOrCreateNodeKey(opts.keyPath);
  const gate: GateCounters = { denied: {} };
  const host = await createHost({
    privateKey: key.privateKey,
    listen: opts.listen,
    ...(opts.announce ? { announce: opts.announce } : {}),
    relay: opts.relay,
    directory: opts.directory,
    gateCounters: gate,
  });
  return new OverlayImpl(opts, host, gate, log);
}

class OverlayImpl implements Overlay {
  readonly host: Host;
  readonly peerId: string;
  readonly #opts: OverlayOptions;
  readonly #dir: PeerDirectory;
  readonly #log: Logger;
  readonly #gate: GateCounters;
  readonly #planner: PathPlanner;
  readonly #sessions: PeerSessions;
  readonly #punched = new Set<string>(); // ids of connections made by our hole punch
  readonly #splice: SplicePath;
  readonly #reservations: ReservationKeeper;
  readonly #punch: HolePunch;
  readonly #dialer: Dialer;
  readonly #punching: PunchScheduler;
  readonly #tunnels: StreamTunnels;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #liveness: Liveness;
  readonly #observed: { answered: number; refused: number };
  readonly #udp: UdpCarrier | undefined;
  readonly #relayBindings: RelayBindingService | undefined;
  readonly events = new EventEmitter<OverlayEvents>();
  #pathChanges = 0;
  #stopped = false;

  constructor(opts: OverlayOptions, host: Host, gate: GateCounters, log: Logger) {
    this.#opts = opts;
    this.host = host;
    this.peerId = host.peerId.toString();
    this.#dir = opts.directory;
    this.#log = log;
    this.#gate = gate;
    this.#planner = new PathPlanner({
      directory: this.#dir,
      peerId: this.peerId,
      site: opts.site,
      listen: opts.listen,
      ...(opts.announce === undefined ? {} : { announce: opts.announce }),
      punchPort: opts.punchPort,
      relay: opts.relay,
    });
    this.#sessions = new PeerSessions({
      udp: () => this.#udp,
      detachLink: (node) => this.#opts.forwarder.detachLink(node),
      onDropped: (session) => {
        this.#udp?.drop(session.node);
        void this.host.hangUp(peerIdFromString(session.peerId)).catch(() => {});
      },
    });
    this.#liveness = new Liveness({
      host,
      sessions: this.#sessions,
      directory: this.#dir,
      attach: (session) => this.#tunnels.attach(session),
      udp: () => this.#udp,
      relay: opts.relay,
      ...(opts.deadAfterMs === undefined ? {} : { deadAfterMs: opts.deadAfterMs }),
      ...(opts.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: opts.idleTimeoutMs }),
      log,
    });
    this.#reservations = new ReservationKeeper(host, () => this.#dir.relays(), log);
    this.#punch = new HolePunch({
      host,
      internals: internalsOf(host),
      punchPort: opts.punchPort,
      directory: this.#dir,
      log,
      onConnection: (conn) => this.#punched.add(conn.id),
    });
    this.#tunnels = new StreamTunnels({
      host,
      directory: this.#dir,
      sessions: this.#sessions,
      caps: { offload: opts.offload ?? false },
      ...(opts.maxQueueBytes === undefined ? {} : { maxQueueBytes: opts.maxQueueBytes }),
      forwarder: opts.forwarder,
      isSpliced: (id) => this.#splice.isSpliced(id),
      noteTraffic: (id) => this.#liveness.noteTraffic(id),
      udpCarries: (node) => this.#udp?.carries(node) ?? false,
      onPathMaybeChanged: (session) => this.#notePath(session),
      onRelayedInbound: (session, peer) => this.#punching.afterRelayedInbound(session, peer),
      log,
    });
    this.#tunnels.listen();
    this.#punch.start();
    this.#splice = new SplicePath({
      host,
      internals: internalsOf(host),
      directory: this.#dir,
      relay: opts.spliceRelay,
      peerId: this.peerId,
      planFor: (node) => this.planFor(node),
      hasUdp: () => this.#udp !== undefined,
      udpCarries: (node) => this.#udp?.carries(node) ?? false,
      openTunnel: (session, conn) => this.#tunnels.open(session, conn),
      stopped: () => this.#stopped,
      log,
    });
    this.#dialer = new Dialer({
      host,
      directory: this.#dir,
      peerId: this.peerId,
      planFor: (node) => this.planFor(node),
      isSpliced: (id) => this.#splice.isSpliced(id),
      relayObservedIpOf: (peerId) => this.#punch.relayObservedIpOf(peerId),
      stopped: () => this.#stopped,
      log,
    });
    this.#punching = new PunchScheduler({
      host,
      punch: this.#punch,
      directory: this.#dir,
      sessions: this.#sessions,
      peerId: this.peerId,
      planFor: (node) => this.planFor(node),
      pathOf: (node) => this.pathOf(node),
      openTunnel: (session, conn) => this.#tunnels.open(session, conn),
      autoPunch: opts.autoPunch !== false,
      stopped: () => this.#stopped,
      onTick: (session) => {
        this.#splice.maybeSplice(session);
        // A tunnel without a UDP session (the handshake failed, the session expired): retry.
        if (session.preferred() !== undefined) this.#udp?.ensure(session.node);
      },
      log,
    });
    this.#observed = serveObservedAddress(host, this.#dir);
    this.#udp =
      opts.udp && opts.transport !== 'stream'
        ? openCarrier({
            carrier: {
              factory: opts.udp,
              host,
              directory: this.#dir,
              log,
              mode: opts.transport ?? 'auto',
              connectionTo: (node) => this.#dialer.connectionTo(node),
              publicIp: () => this.#punch.publicIp(),
              observedIpOf: (peerId) => this.#dialer.observedIpOf(peerId),
              selfPublic: () => this.#planner.self().publicReachable,
              announcedIps: () =>
                (opts.announce ?? []).map((a) => a.split('/')[2] ?? '').filter((ip) => ip !== '' && isPublicIp(ip)),
              ...(opts.udpExcludeInterfaces === undefined ? {} : { excludeInterfaces: opts.udpExcludeInterfaces }),
              ...(opts.udpRekeyAfterMs === undefined ? {} : { rekeyAfterMs: opts.udpRekeyAfterMs }),
              ...(opts.udpKeepaliveMs === undefined ? {} : { keepaliveMs: opts.udpKeepaliveMs }),
              ...(opts.ladderTuning === undefined ? {} : { tuning: opts.ladderTuning }),
            },
            sessions: this.#sessions,
            forwarder: opts.forwarder,
            attach: (session) => this.#tunnels.attach(session),
            connect: (node) => this.connect(node),
            onPathMaybeChanged: (session) => this.#notePath(session),
            ...(opts.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: opts.idleTimeoutMs }),
            stopped: () => this.#stopped,
          })
        : undefined;
    this.#relayBindings =
      opts.udpRelay === undefined ? undefined : serveRelayBindings(host, this.#dir, opts.udpRelay, log);
    void handleKeepalive(host);
    if (!opts.relay) this.#reservations.start();
    this.#dir.on('peer:removed', (peer) => this.#sessions.drop(peer.node));
    this.#dir.on('peer:added', (peer) => {
      if (peer.relay) this.#reservations.check();
    });
    const keepalive = opts.keepaliveIntervalMs ?? 500;
    this.#every(keepalive, () => this.#liveness.keepalive());
    this.#every(Math.min(10_000, opts.idleTimeoutMs ?? 120_000), () => this.#liveness.closeIdle());
    this.#every(1000, () => this.#punching.tick());
    opts.forwarder.onPeerNeeded?.((node) => {
      this.connect(node).catch((err: Error) => this.#log.debug({ peer: node, err: err.message }, 'connect failed'));
    });
  }

  multiaddrs(): string[] {
    return this.host.getMultiaddrs().map(String);
  }

  planFor(node: string): PathPlan {
    return this.#planner.planFor(node);
  }

  async connect(node: string): Promise<void> {
    if (this.#stopped) throw new Error('overlay stopped');
    const peer = this.#dir.get(node);
    if (peer === undefined) throw new Error(`node ${node} is not in the peer directory`);
    const plan = this.planFor(node);
    if (plan.kind === 'host-gw') return;
    if (plan.kind === 'none') throw new Error(`no path to ${node}: ${plan.reason}`);
    const session = this.#sessions.obtain(peer);
    if (this.#udp?.carries(node)) return;
    if (session.preferred() !== undefined) {
      this.#udp?.ensure(node);
      return;
    }
    session.connecting ??= this.#open(session, peer, plan).finally(() => {
      session.connecting = undefined;
    });
    return session.connecting;
  }

  async #open(session: PeerSession, peer: PeerInfo, plan: PathPlan): Promise<void> {
    const conn = await this.#dialer.dialFor(peer, plan);
    // The UDP handshake runs on this connection while the tunnel opens (first contact waits
    // for the longer of the two, not their sum). Traffic flows on the stream at once; UDP
    // takes over when its path answers.
    this.#udp?.ensure(peer.node);
    await this.#tunnels.open(session, conn);
    if (plan.kind === 'relayed' && plan.punch) this.#punching.maybePunch(session);
    if (plan.kind === 'relayed') this.#splice.maybeSplice(session);
  }

  udpPort(): number | undefined {
    return this.#udp?.port;
  }

  /** Our NAT kind as reflection shows it (undefined without a UDP socket). */
  natKind(): NatKind | undefined {
    return this.#udp?.natKind;
  }

  #notePath(session: PeerSession): void {
    const path = this.pathOf(session.node);
    if (path === session.lastPath) return;
    this.#log.info({ peer: session.node, from: session.lastPath, to: path }, 'tunnel path changed');
    const from = session.lastPath;
    session.lastPath = path;
    session.pathSince = Date.now();
    this.#pathChanges++;
    this.events.emit('path', session.node, from, path);
  }

  #every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.#timers.push(t);
  }

  // --- status ---------------------------------------------------------------------------

  punchNow(node: string): Promise<PathKind> {
    return this.#punching.punchNow(node);
  }

  pathOf(node: string): PathKind {
    const peer = this.#dir.get(node);
    if (peer !== undefined && this.planFor(node).kind === 'host-gw') return 'host-gw';
    const stream = this.#streamPathOf(node);
    return this.#udp === undefined ? stream : this.#udp.pathOf(node, stream);
  }

  #streamPathOf(node: string): StreamPathKind {
    const tunnel = this.#sessions.get(node)?.preferred();
    if (tunnel === undefined) return 'none';
    if (!tunnel.direct) return 'relayed';
    return this.#punched.has(tunnel.connection.id) ? 'hole-punched' : 'direct';
  }

  reservations(): string[] {
    return this.#dir
      .relays()
      .filter((r) => r.peerId !== this.peerId && this.#reservations.hasReservation(r.peerId))
      .map((r) => r.node);
  }

  capsOf(node: string): TunnelCaps | undefined {
    return this.#sessions.get(node)?.preferred()?.caps;
  }

  status(): OverlayPeerStatus[] {
    return this.#dir
      .list()
      .filter((p) => p.peerId !== this.peerId)
      .map((peer) => this.#statusOf(peer, this.pathOf(peer.node)));
  }

  statusOf(node: string, path = this.pathOf(node)): OverlayPeerStatus | undefined {
    const peer = this.#dir.get(node);
    return peer === undefined || peer.peerId === this.peerId ? undefined : this.#statusOf(peer, path);
  }

  #statusOf(peer: PeerInfo, path: PathKind): OverlayPeerStatus {
    const s = this.#sessions.get(peer.node);
    return {
      node: peer.node,
      site: peer.site,
      podCidrs: peer.podCidrs,
      path,
      rttMs: s?.rttMs,
      txBytes: s?.txBytes ?? 0,
      rxBytes: s?.rxBytes ?? 0,
      drops: s?.drops ?? 0,
      lastSeen: s?.lastSeen,
      remoteAddr:
        (this.#udp?.carries(peer.node) ? this.#udp.endpointText(peer.node) : undefined) ??
        s?.preferred()?.connection.remoteAddr.toString(),
      msToDirect: this.#udp?.msToDirect(peer.node),
      // Only when the path asked about is the one last noted (status reads it live).
      pathSince: s !== undefined && s.pathSince > 0 && s.lastPath === path ? s.pathSince : undefined,
    };
  }

  counters(): OverlayCounters {
    return {
      punch: this.#punch.counters,
      gateDenied: { ...this.#gate.denied },
      badFrames: this.#tunnels.counters.badFrames,
      badFrameHeaders: this.#tunnels.counters.badFrameHeaders,
      tunnelsOpened: this.#tunnels.counters.opened,
      pathChanges: this.#pathChanges,
      observed: { ...this.#observed },
      ...(this.#udp === undefined ? {} : { udp: this.#udp.counters() }),
      splice: this.#splice.counters(),
      ...(this.#relayBindings === undefined
        ? {}
        : {
            relayBindings: { ...this.#relayBindings.counters, refused: { ...this.#relayBindings.counters.refused } },
          }),
    };
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    this.#reservations.stop();
    this.#punch.stop();
    this.#splice.stop();
    this.#relayBindings?.stop();
    for (const node of this.#sessions.nodes()) this.#sessions.drop(node, 'overlay stopping');
    await this.#udp?.stop();
    await this.host.stop();
  }
}
