// The composition root: one agent per node wires IPAM, CNI, the dataplane and the overlay
// in the order a node must come up, keeps it right while Nodes come and go, and takes it
// down cleanly. Start-up order (each step needs the one before):
//   own Node → node key + libp2p host → node block(s) → lease store → annotations on the
//   own Node → subnet info + conflist → CNI client → bridge (gateway address) + masquerade
//   → TUN up, routes, forwarding → CNI socket → Node informer → ready.
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import type { V1Node } from '@kubernetes/client-node';
import { CniPlugin } from '../cni/plugin.ts';
import { startCniServer } from '../cni/server.ts';
import { configureInterface, enableForwarding, mtuOfInterfaceWith, type RouteSpec } from '../common/host-net/index.ts';
import type { Logger } from '../common/log.ts';
import { Forwarder } from '../dataplane/forwarder.ts';
import { PacketCapture } from '../dataplane/pcap.ts';
import { TunDevice } from '../dataplane/tun-device.ts';
import { UdpRelay } from '../dataplane/udp-relay.ts';
import { tunnelMtu } from '../dataplane/udp-session.ts';
import { claimNodeBlocks } from '../ipam/index.ts';
import { LeaseStore } from '../ipam/lease-store.ts';
import type { NodeBlock } from '../ipam/types.ts';
import { birthdayEvents } from '../overlay/birthday-punch.ts';
import { PeerDirectory, type PeerInfo, peerAnnotations } from '../overlay/directory.ts';
import { createOverlay, type Overlay } from '../overlay/overlay.ts';
import { loadOrCreatePunchPort, portIsFree } from '../overlay/punch-port.ts';
import { SpliceRelay } from '../overlay/splice-relay.ts';
import { BlockWatch } from './block-watch.ts';
import { buildConflist, installCniClient, writeConflist, writeSubnetInfo } from './cni-files.ts';
import { type AgentConfig, agentFiles } from './config.ts';
import type { CaptureRequest } from './control-api.ts';
import { type ForwarderRoutes, routeForwarder } from './forwarder-routes.ts';
import { deviceTowards, ensureFallbackRoutes, hostGwRoutes, tunRoutes } from './host-routes.ts';
import { loadKubeConfig, NodeApi } from './kube.ts';
import { AgentMetrics } from './metrics.ts';
import { NodeWatch } from './node-watch.ts';
import { PeerRouteVerifier } from './peer-routes.ts';
import { PodCidrAuthority } from './pod-cidr-authority.ts';
import { resolveReaders } from './readers.ts';
import { RouteReconciler } from './route-reconciler.ts';
import { resolveIdentity, type SelfIdentity, waitForOwnNode } from './self-node.ts';
import type { AgentStatus, PathKind, PeerStatus } from './status.ts';
import { udpSocketFactory } from './udp-socket.ts';

export interface AgentParts {
  api: NodeApi;
  self: SelfIdentity;
  blocks: NodeBlock[];
  leases: LeaseStore;
  directory: PeerDirectory;
  overlay: Overlay;
  tun: TunDevice;
  forwarder: Forwarder;
  /** Programs the forwarder from the peer table's routes. */
  forwarderRoutes: ForwarderRoutes;
  plugin: CniPlugin;
  routes: RouteReconciler;
  /** Decides each peer's routes in the peer table. */
  peerRoutes: PeerRouteVerifier;
  watch: NodeWatch;
}

export class Agent {
  readonly config: AgentConfig;
  readonly metrics: AgentMetrics;
  private readonly log: Logger;
  private readonly files: ReturnType<typeof agentFiles>;
  /** Undo steps, run in reverse on stop() or on a failed start. */
  private readonly closers: Array<{ what: string; close: () => Promise<void> | void }> = [];
  private readonly abort = new AbortController();
  private parts: Partial<AgentParts> = {};
  private ready = false;
  private stopping: Promise<void> | undefined;
  private republishing: Promise<void> | undefined;
  /** The port this node punches (and carries UDP data) from: its own, never a cluster-wide one. */
  private punchPort: number | undefined;
  private relayPort: number | undefined;

  constructor(config: AgentConfig, opts: { logger: Logger; metrics?: AgentMetrics }) {
    this.config = config;
    this.log = opts.logger;
    this.metrics = opts.metrics ?? new AgentMetrics();
    this.files = agentFiles(config);
  }

  /** Brings the node up; on failure undoes what it did and rethrows. */
  async start(): Promise<void> {
    try {
      await this.startSteps();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private step(name: string): void {
    this.log.info({ step: name }, 'start-up');
  }

  private onClose(what: string, close: () => Promise<void> | void): void {
    this.closers.push({ what, close });
  }

  private async startSteps(): Promise<void> {
    const cfg = this.config;
    const files = this.files;
    const signal = this.abort.signal;
    await mkdir(cfg.paths.stateDir, { recursive: true, mode: 0o700 });
    await mkdir(cfg.paths.runDir, { recursive: true, mode: 0o700 });

    this.step('own Node');
    const kubeconfig = loadKubeConfig(cfg.kubeconfig);
    const api = new NodeApi(kubeconfig);
    const ownNode = await waitForOwnNode(api, cfg.nodeName, this.log, signal);
    const self = resolveIdentity(cfg, ownNode);
    this.parts.api = api;
    this.parts.self = self;
    this.log.info({ site: self.site, nodeIp: self.nodeIp, relay: self.relay }, 'node identity');

    // The TUN and forwarder exist before the overlay (which delivers into the forwarder);
    // nothing reaches them until the routes are installed further down.
    this.step('node key + libp2p host');
    const tunMtu = await this.tunMtu(self.nodeIp);
    const readers = resolveReaders(cfg.tun.readers);
    this.log.info({ setting: cfg.tun.readers, readers, cpus: availableParallelism() }, 'TUN and UDP readers');
    const tun = TunDevice.open({
      name: cfg.tun.name,
      offload: cfg.tun.offload,
      mtu: tunMtu,
      writeBurst: cfg.tun.writeBurst,
      reader: readers,
    });
    this.parts.tun = tun;
    this.onClose('TUN', () => tun.close());
    const directory = new PeerDirectory();
    this.parts.directory = directory;
    // The overlay subscribes to the forwarder's "peer needed" (connect on demand) itself.
    const forwarder = new Forwarder({ tun, localCidrs: [], logger: this.log.child({ component: 'forwarder' }) });
    this.parts.forwarder = forwarder;
    // The forwarder follows the peer table's routes from here on (none are set before the Node watch).
    const forwarderRoutes = routeForwarder(directory, forwarder, this.log.child({ component: 'forwarder' }));
    this.parts.forwarderRoutes = forwarderRoutes;
    this.onClose('forwarder routes', () => forwarderRoutes.stop());
    const punch = await loadOrCreatePunchPort(files.punchPort, { configured: cfg.overlay.punchPort });
    this.punchPort = punch.port;
    this.log.info({ port: punch.port, source: punch.source }, 'punch port');
    const udpRelay = self.relay && cfg.overlay.transport !== 'stream' ? await this.openUdpRelay() : undefined;
    const spliceRelay = self.relay ? await this.openSpliceRelay() : undefined;
    const overlay = await createOverlay({
      nodeName: cfg.nodeName,
      site: self.site,
      keyPath: files.nodeKey,
      listen: cfg.overlay.listen,
      announce: self.announce,
      punchPort: punch.port,
      relay: self.relay,
      directory,
      forwarder,
      offload: tun.offload,
      logger: this.log.child({ component: 'overlay' }),
      transport: cfg.overlay.transport,
      ...(udpRelay === undefined ? {} : { udpRelay }),
      ...(spliceRelay === undefined ? {} : { spliceRelay }),
      // UDP sessions carry traffic where they answer; the stream tunnel stays the fallback.
      ...(cfg.overlay.transport === 'stream'
        ? {}
        : {
            udp: udpSocketFactory({
              port: cfg.overlay.udpPort ?? punch.port,
              mtu: tunMtu,
              receiver: readers,
              log: this.log.child({ component: 'udp' }),
            }),
            udpExcludeInterfaces: [cfg.tun.name, cfg.bridge.name],
          }),
    });
    this.parts.overlay = overlay;
    this.onClose('libp2p host', () => overlay.stop());
    this.log.info({ peerId: overlay.peerId, multiaddrs: overlay.multiaddrs() }, 'libp2p host up');

    this.step('node blocks');
    const blocks = await claimNodeBlocks({
      kubeconfig,
      nodeName: cfg.nodeName,
      clusterCidrs: cfg.clusterCidrs,
      blockPrefixV4: cfg.blockPrefixV4,
      blockPrefixV6: cfg.blockPrefixV6,
    });
    this.parts.blocks = blocks;
    forwarder.setLocalCidrs(blocks.map((b) => b.cidr));
    this.log.info({ blocks: blocks.map((b) => b.cidr) }, 'node blocks');

    this.step('lease store');
    const leases = await LeaseStore.open({
      dir: files.leaseDir,
      blocks,
      logger: this.log.child({ component: 'ipam' }),
    });
    this.parts.leases = leases;
    this.onClose('lease store', () => leases.close());

    this.step('annotations');
    await this.publishAnnotations();

    this.step('conflist + CNI client');
    await writeSubnetInfo(files.subnetInfo, {
      node: cfg.nodeName,
      site: self.site,
      clusterCidrs: cfg.clusterCidrs,
      blocks,
      tunMtu,
      bridgeMtu: cfg.bridge.mtu,
    });
    await installCniClient(files.cniClient);
    await writeConflist(
      files.conflist,
      await buildConflist({
        socketPath: files.cniSocket,
        cniBinDir: cfg.paths.cniBinDir,
        cniVersion: cfg.cni.version,
      }),
    );

    // The bridge carries the gateway address, which the TUN routes use as their source:
    // it must exist before them.
    this.step('bridge + masquerade');
    const plugin = new CniPlugin({
      leases,
      blocks,
      clusterCidrs: cfg.clusterCidrs,
      bridgeName: cfg.bridge.name,
      mtu: cfg.bridge.mtu,
      isReady: () => this.ready,
      logger: this.log.child({ component: 'cni' }),
      onOperation: (op, seconds, ok) => this.metrics.observeCni(op, seconds, ok),
      // The installed client's netlink-helper mode: ADD/DEL start no ip/nsenter process.
      netlinkHelper: files.cniClient,
    });
    this.parts.plugin = plugin;
    this.onClose('netlink helper', () => plugin.close());
    await plugin.start();

    this.step('TUN + routes');
    await configureInterface({ dev: tun.name, mtu: tunMtu, up: true });
    await enableForwarding([...new Set(blocks.map((b) => b.family))]);
    await ensureFallbackRoutes(cfg.clusterCidrs);
    const routes = new RouteReconciler({
      desired: () => this.desiredRoutes(),
      clusterCidrs: cfg.clusterCidrs,
      logger: this.log.child({ component: 'routes' }),
    });
    this.parts.routes = routes;
    this.onClose('route reconciler', () => routes.stop());
    // Host-gw routes depend on a peer's routed CIDRs, its site and its addresses: any change
    // to a peer in the table is a reason to reconcile (coalesced).
    const reroute = () => routes.schedule();
    const peerEvents = ['peer:added', 'peer:updated', 'peer:removed', 'peer:routes'] as const;
    for (const event of peerEvents) directory.on(event, reroute);
    this.onClose('route triggers', () => {
      for (const event of peerEvents) directory.off(event, reroute);
    });
    await routes.runNow();
    if (routes.lastError) throw new Error(`cannot install pod routes: ${routes.lastError}`);

    this.step('CNI socket');
    const server = await startCniServer({
      socketPath: files.cniSocket,
      plugin,
      logger: this.log.child({ component: 'cni-server' }),
    });
    this.onClose('CNI socket', () => server.close());

    // IPAMBlocks first: a peer's pod CIDRs are checked against them as soon as it appears.
    this.step('IPAMBlock watch');
    const authority = new PodCidrAuthority(cfg.clusterCidrs, { v4: cfg.blockPrefixV4, v6: cfg.blockPrefixV6 });
    const blockWatch = new BlockWatch({ api, authority, logger: this.log.child({ component: 'block-watch' }) });
    this.onClose('IPAMBlock watch', () => blockWatch.stop());
    await blockWatch.start();

    this.step('Node watch');
    const peerRoutes = new PeerRouteVerifier({
      directory,
      authority,
      localCidrs: blocks.map((b) => b.cidr),
      logger: this.log.child({ component: 'peer-routes' }),
      onRefused: (node, refused) => {
        const message = `edgemesh agent on ${cfg.nodeName} refuses pod CIDRs of this node: ${refused
          .map((r) => `${r.cidr} (${r.reason})`)
          .join('; ')}`;
        api
          .warnAboutNode(node, cfg.nodeName, 'PodCIDRRefused', message)
          .catch((err: Error) => this.log.debug({ node, err: err.message }, 'could not create event'));
      },
    });
    this.parts.peerRoutes = peerRoutes;
    this.onClose('peer routes', () => peerRoutes.stop());
    const watch = new NodeWatch({
      api,
      selfName: cfg.nodeName,
      directory,
      authority,
      onSelf: (node) => this.checkOwnAnnotations(node),
      logger: this.log.child({ component: 'node-watch' }),
    });
    this.parts.watch = watch;
    this.onClose('Node watch', () => watch.stop());
    await watch.start();
    await routes.runNow();
    // Node events keep routes current; the periodic pass repairs what others changed
    // (a route deleted by hand, the TUN's routes after someone set it down and up).
    const resync = setInterval(() => routes.schedule(0), cfg.resyncSeconds * 1000);
    resync.unref();
    this.onClose('route resync', () => clearInterval(resync));

    this.metrics.attach({
      peers: () => this.peerSamples(),
      drops: () => {
        const counters = overlay.counters();
        const udp = Object.entries(counters.udp?.socketDrops ?? {}).map(([r, n]) => [`udp-${r}`, n]);
        // Stream garbage refused by the tunnel reader never reaches the forwarder's counts.
        const headers = counters.badFrameHeaders > 0 ? { 'bad-frame-header': counters.badFrameHeaders } : {};
        return { ...forwarder.stats().drops, ...headers, ...Object.fromEntries(udp) };
      },
      holePunch: () => {
        const punch = overlay.counters().punch;
        return { attempts: punch.attempts, results: { success: punch.successes, ...punch.failures } };
      },
      ipam: () => leases.usage().map((u) => ({ cidr: u.cidr, used: u.used, capacity: u.capacity })),
      refusedNodes: () => directory.ignored.size,
      // A CIDR the forwarder's guard refused after the verifier routed it is a bug too: counted here.
      nodeEventErrors: () =>
        watch.handlerErrors +
        peerRoutes.handlerErrors +
        forwarderRoutes.errors +
        forwarderRoutes.refusedByForwarder +
        blockWatch.handlerErrors,
      refusedPodCidrs: () => [...directory.refusals().values()].reduce((n, r) => n + r.length, 0),
      peerIdConflicts: () => directory.conflicts().size,
      paths: () => {
        const c = overlay.counters();
        return {
          changes: c.pathChanges,
          udpSwitches: c.udp?.paths.switches ?? 0,
          udpHandshakeFailures: c.udp?.sessions.handshakeFailures ?? {},
          udpBadControl: c.udp?.paths.badControl ?? 0,
          udpAttempts: c.udp?.paths.attempts ?? 0,
          udpResults: { success: c.udp?.paths.successes ?? 0, ...(c.udp?.paths.failures ?? {}) },
          reflection: c.udp?.reflection,
          birthday: birthdayEvents(c.udp?.paths.birthday),
          natKind: c.udp?.natKind,
        };
      },
      cniPlumbing: () => plugin.plumbingCounters(),
      splice: () => {
        const s = overlay.counters().splice;
        if (s === undefined) return undefined;
        return {
          member: { established: s.established, accepted: s.accepted, ...s.failed },
          ...(s.relay === undefined
            ? {}
            : {
                requests: { granted: s.relay.granted, ...s.relay.refused },
                refusedSockets: { ...s.relay.sockets, ...(s.relay.expired > 0 ? { expired: s.relay.expired } : {}) },
                pipedBytes: s.relay.bytes,
                active: s.relay.active,
                pending: s.relay.pending,
              }),
        };
      },
      udpRelay: () => {
        if (udpRelay === undefined || udpRelay.closed) return undefined;
        const s = udpRelay.stats();
        const b = overlay.counters().relayBindings;
        return {
          forwardedDatagrams: s.txDatagrams,
          forwardedBytes: s.txBytes,
          bindings: s.bindings,
          drops: s.drops,
          requests: { granted: b?.granted ?? 0, ...(b?.refused ?? {}) },
        };
      },
    });
    this.ready = true;
    this.metrics.setReady(true);
    this.log.info({ blocks: blocks.map((b) => b.cidr), peerId: overlay.peerId }, 'agent ready');
  }

  /** Publishes peer id, multiaddrs, pod CIDRs, site, node IP and punch port on the own Node. */
  private async publishAnnotations(): Promise<void> {
    const annotations = this.desiredAnnotations();
    if (annotations) await this.parts.api!.patchAnnotations(this.config.nodeName, annotations);
  }

  /**
   * Puts the annotations back when the own Node no longer carries them (edited by hand,
   * Node re-registered): peers would otherwise drop this node from their directories.
   */
  private checkOwnAnnotations(node: V1Node): void {
    const want = this.desiredAnnotations();
    const have = node.metadata?.annotations ?? {};
    if (!want || this.republishing || Object.entries(want).every(([k, v]) => have[k] === v)) return;
    this.log.warn('own Node annotations differ from this agent; publishing them again');
    this.republishing = this.publishAnnotations()
      .catch((err: Error) => this.log.error({ err: err.message }, 're-publishing annotations failed'))
      .finally(() => {
        this.republishing = undefined;
      });
  }

  private desiredAnnotations(): Record<string, string> | undefined {
    const { self, overlay, blocks } = this.parts;
    if (!self || !overlay || !blocks) return undefined;
    return peerAnnotations({
      peerId: overlay.peerId,
      multiaddrs: overlay.multiaddrs(),
      podCidrs: blocks.map((b) => b.cidr),
      site: self.site,
      nodeIp: self.nodeIp,
      ...(this.punchPort === undefined ? {} : { punchPort: this.punchPort }),
      ...(this.relayPort === undefined ? {} : { relayPort: this.relayPort }),
    });
  }

  /**
   * A relay node's UDP relay: members' sealed session datagrams forwarded unopened (see
   * docs/udp-relay.md). Its own port, kept across restarts like the punch port so members'
   * NAT mappings and cached annotations stay valid. Closed after the overlay (closers run in
   * reverse), so no binding request is served by a closed relay.
   */
  private async openUdpRelay(): Promise<UdpRelay> {
    const cfg = this.config;
    const choice = await loadOrCreatePunchPort(agentFiles(cfg).relayPort, {
      configured: cfg.overlay.relayPort,
      // Never the punch port: the UDP data socket takes that one.
      isFree: async (port) => port !== this.punchPort && (await portIsFree(port)),
    });
    let relay: UdpRelay;
    try {
      relay = UdpRelay.open({ bind: '::', port: choice.port });
    } catch (err) {
      this.log.info({ err: (err as Error).message }, 'UDP relay on :: failed, using IPv4 only');
      relay = UdpRelay.open({ bind: '0.0.0.0', port: choice.port });
    }
    this.relayPort = relay.port;
    this.onClose('UDP relay', () => relay.close());
    this.log.info({ port: relay.port, source: choice.source }, 'UDP relay open');
    return relay;
  }

  /**
   * A relay node's TCP splice: the relayed stream fallback's data path (docs/stream-relay.md).
   * TCP on the relay port's number (the UDP relay holds the UDP side of it), so one port
   * number opens both relays in a firewall; members learn it from the splice protocol's
   * answer, so another port works too when that one is taken. Closed after the overlay.
   */
  private async openSpliceRelay(): Promise<SpliceRelay> {
    const cfg = this.config;
    const port =
      this.relayPort ??
      (
        await loadOrCreatePunchPort(agentFiles(cfg).relayPort, {
          configured: cfg.overlay.relayPort,
          isFree: async (p) => p !== this.punchPort && (await portIsFree(p)),
        })
      ).port;
    let relay: SpliceRelay | undefined;
    for (const [host, p] of [
      ['::', port],
      ['0.0.0.0', port],
      ['::', 0],
    ] as const) {
      try {
        relay = await SpliceRelay.listen({ host, port: p });
        break;
      } catch (err) {
        this.log.info({ host, port: p, err: (err as Error).message }, 'splice relay listen failed, trying the next');
      }
    }
    if (relay === undefined) throw new Error('the splice relay cannot listen on any address');
    const opened = relay;
    this.onClose('splice relay', () => opened.close());
    this.log.info({ port: opened.port }, 'TCP splice relay open');
    return opened;
  }

  /** Cluster CIDRs → TUN; same-site peers' pod CIDRs → host-gw via their node IP (per family). */
  private async desiredRoutes(): Promise<RouteSpec[]> {
    const { blocks, directory, self } = this.parts;
    if (!blocks || !directory || !self) return [];
    const sameSite = directory
      .list()
      .filter((p) => p.site === self.site && p.node !== this.config.nodeName)
      .map((p) => ({
        node: p.node,
        nextHops: [...new Set([p.nodeIp, ...p.internalIps])],
        // Only what the cluster backs: a peer's own word never becomes a kernel route.
        podCidrs: directory.routesOf(p.node),
      }));
    const devs = new Map<string, string | undefined>();
    for (const ip of new Set(sameSite.flatMap((p) => p.nextHops))) devs.set(ip, await deviceTowards(ip));
    return [
      ...tunRoutes(this.config.clusterCidrs, blocks, this.config.tun.name),
      ...hostGwRoutes(sameSite, (ip) => devs.get(ip), this.config.clusterCidrs),
    ];
  }

  isReady(): boolean {
    return this.ready;
  }

  /** Packets the forwarder has moved to and from peers so far (a measure of activity). */
  packetsMoved(): number {
    let n = 0;
    for (const c of Object.values(this.parts.forwarder?.stats().peers ?? {})) n += c.txPackets + c.rxPackets;
    return n;
  }

  /**
   * The TUN's MTU: configured, or the underlay's MTU (of the interface with the node IP)
   * less the UDP session overhead over IPv6, the larger of the two outer headers, so a
   * sealed datagram of a full-size inner packet never needs fragmenting on either family.
   */
  private async tunMtu(nodeIp: string): Promise<number> {
    const configured = this.config.tun.mtu;
    if (configured !== 'auto') return configured;
    const underlay = await mtuOfInterfaceWith(nodeIp).catch(() => undefined);
    const mtu = Math.max(1280, tunnelMtu(underlay ?? 1500, 6));
    this.log.info({ underlay: underlay ?? 'unknown (1500 assumed)', tunMtu: mtu }, 'TUN MTU derived from the underlay');
    return mtu;
  }

  /** One peer's line of the status, `path` already known. */
  #peerStatus(info: PeerInfo, path: PathKind): PeerStatus {
    const { overlay, directory, forwarder } = this.parts;
    const o = overlay?.statusOf(info.node, path);
    const f = forwarder?.countersOf(info.node);
    const lastSeen = o?.lastSeen;
    const refused = directory?.refusedOf(info.node) ?? [];
    return {
      node: info.node,
      site: info.site,
      podCidrs: directory?.routesOf(info.node) ?? [],
      ...(refused.length > 0 ? { refusedCidrs: refused } : {}),
      path,
      ...(o?.pathSince === undefined ? {} : { pathSince: new Date(o.pathSince).toISOString() }),
      rttMs: o?.rttMs ?? null,
      txBytes: f?.txBytes ?? o?.txBytes ?? 0,
      rxBytes: f?.rxBytes ?? o?.rxBytes ?? 0,
      txPackets: f?.txPackets ?? 0,
      rxPackets: f?.rxPackets ?? 0,
      drops: (f?.drops ?? 0) + (o?.drops ?? 0),
      lastSeen: lastSeen === undefined ? null : new Date(lastSeen).toISOString(),
      ...(o?.remoteAddr === undefined ? {} : { endpoint: o.remoteAddr }),
      ...(o?.msToDirect === undefined ? {} : { msToDirect: o.msToDirect }),
    };
  }

  /**
   * The status lines of the peers that have something to show: a path, or packets or drops
   * counted. What the metrics read at every scrape: tunnels open on demand, so in a large
   * cluster most peers have neither, and building their lines at each scrape (5,000 Nodes)
   * grew the agent by tens of MiB under a Prometheus's scrapes (`node bench/agent-memory.ts`).
   */
  peerSamples(): PeerStatus[] {
    const { overlay, directory, forwarder } = this.parts;
    const samples: PeerStatus[] = [];
    for (const info of directory?.list() ?? []) {
      const path = overlay?.pathOf(info.node) ?? 'none';
      const f = forwarder?.countersOf(info.node);
      if (path === 'none' && !(f && (f.txPackets > 0 || f.rxPackets > 0 || f.drops > 0))) continue;
      samples.push(this.#peerStatus(info, path));
    }
    return samples;
  }

  /** The control API's `GET /status`. */
  status(): AgentStatus {
    const { self, overlay, blocks, directory } = this.parts;
    const peers = (directory?.list() ?? []).map((info) => this.#peerStatus(info, overlay?.pathOf(info.node) ?? 'none'));
    return {
      node: this.config.nodeName,
      site: self?.site ?? this.config.site ?? '',
      peerId: overlay?.peerId ?? '',
      podCidrs: (blocks ?? []).map((b) => b.cidr),
      ready: this.ready,
      ...(overlay?.natKind() === undefined ? {} : { natKind: overlay.natKind() }),
      peers,
      refusedNodes: [...(directory?.ignored ?? new Map<string, string>())].map(([node, reason]) => ({ node, reason })),
    };
  }

  /** The control API's `GET /capture`: a pcap of what the forwarder moves. */
  async capture(req: CaptureRequest, signal: AbortSignal): Promise<Buffer> {
    const { forwarder } = this.parts;
    if (!forwarder) throw new Error('the dataplane is not up yet');
    const capture = new PacketCapture({
      filter: {
        ...(req.peer ? { peer: req.peer } : {}),
        ...(req.host ? { host: req.host } : {}),
        ...(req.proto ? { proto: req.proto } : {}),
      },
      maxPackets: req.packets,
      maxSeconds: req.seconds,
    });
    forwarder.addCapture(capture);
    const onAbort = () => capture.stop();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await capture.done;
    } finally {
      signal.removeEventListener('abort', onAbort);
      forwarder.removeCapture(capture);
    }
    return capture.toBuffer();
  }

  /** Drains and closes everything in reverse start-up order. Host state stays for the next start. */
  stop(): Promise<void> {
    this.stopping ??= this.stopSteps();
    return this.stopping;
  }

  private async stopSteps(): Promise<void> {
    this.ready = false;
    this.metrics.setReady(false);
    this.abort.abort();
    for (const { what, close } of this.closers.reverse()) {
      try {
        await close();
      } catch (err) {
        this.log.warn({ what, err: (err as Error).message }, 'close failed');
      }
    }
    this.closers.length = 0;
  }

  /** The node's own Node object as last seen (for tests). */
  ownNodeName(): string {
    return this.config.nodeName;
  }
}

export type { V1Node };
