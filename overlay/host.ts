// The libp2p host: TCP + noise + yamux, identify, ping, circuit relay v2 (server on relay
// nodes with the data/duration limits off, client everywhere), and the membership gater.
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { identify } from '@libp2p/identify';
import type { Libp2p, MultiaddrConnection, PeerId, PrivateKey, Upgrader } from '@libp2p/interface';
import { ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import type { Multiaddr } from '@multiformats/multiaddr';
import ipaddr from 'ipaddr.js';
import { createLibp2p } from 'libp2p';
import { ipOf, isCircuit } from './addresses.ts';
import type { PeerDirectory } from './directory.ts';
import { createMembershipGater, type GateCounters } from './gater.ts';
import { INTERNALS_SERVICE, internalsService, wrapUpgradeInbound } from './libp2p-internals.ts';

export interface HostOptions {
  privateKey: PrivateKey;
  listen: string[];
  announce?: string[];
  relay: boolean;
  directory: PeerDirectory;
  gateCounters: GateCounters;
  /** Announce loopback addresses too (tests whose hosts live on 127.0.0.1 only); never for agents. */
  announceLoopback?: boolean;
  /** Counts inbound connections refused before the handshake (per-IP pending cap). */
  inboundCounters?: InboundCounters;
}

export interface InboundCounters {
  /** Inbound connections refused because their IP already had maxPendingPerIp upgrades running. */
  refusedPendingPerIp: number;
}

/**
 * Limits on connections that have not finished their handshake: what a stranger can hold
 * without a key. libp2p's defaults (10 pending in all, 10 s to upgrade) let ten idle TCP
 * connections every ten seconds lock every node, relays included, out of new inbound
 * connections. Here one IP may hold a few, all of them together many, each for a short time.
 */
export const PENDING_LIMITS = {
  /** Upgrades (multistream + noise + yamux: a few round trips) must finish within this. */
  inboundUpgradeTimeoutMs: 5_000,
  /** Upgrades in progress, all sources together. */
  maxPending: 256,
  /** Upgrades in progress from one IP (nodes behind one NAT share it: not 1). */
  maxPendingPerIp: 16,
} as const;

const NEVER_ANNOUNCED = new Set(['loopback', 'linkLocal', 'unspecified', 'multicast', 'broadcast']);

/**
 * Whether a multiaddr is worth giving to peers: never one that means "this machine" or
 * "this link" to whoever dials it (127.0.0.1 would have a peer dial itself).
 */
export function isAnnounceable(ma: Multiaddr, allowLoopback = false): boolean {
  const ip = ipOf(ma);
  if (ip === undefined || !ipaddr.isValid(ip)) return true; // dns, circuit addresses
  let range = ipaddr.parse(ip).range();
  if (range === 'ipv4Mapped') range = (ipaddr.parse(ip) as ipaddr.IPv6).toIPv4Address().range();
  if (allowLoopback && range === 'loopback') return true;
  return !NEVER_ANNOUNCED.has(range);
}

// The stream window bounds the bytes in flight on a tunnel, and so the queue a relayed
// tunnel builds: the relay server's pipe (@libp2p/utils pipe) reads its inbound hop stream
// without backpressure, so only the end-to-end window of the inner yamux bounds what the
// relay holds. With 16 MiB the relay's heap grew past 700 MB, major GC took a quarter of its
// CPU and the pods' TCP saw 100+ ms of queueing (relayed iperf3 0.03-0.06 Gbit/s in the lab);
// 2 MiB gave 0.05-0.19 and direct tunnels lost nothing. 2 MiB still fills 100 Mbit/s at
// 160 ms RTT or 1 Gbit/s at 16 ms. Yamux grows the window from 256 KiB as the reader keeps up.
const YAMUX_MAX_WINDOW = 2 * 1024 * 1024;

export async function createHost(opts: HostOptions) {
  // The gater counts a peer's connections through the host it guards, which exists only
  // once createLibp2p returns.
  let connectionsTo = (_peer: PeerId): number => 0;
  const node = await createLibp2p({
    privateKey: opts.privateKey,
    addresses: {
      listen: opts.listen,
      ...(opts.announce ? { announce: opts.announce } : {}),
      announceFilter: (mas: Multiaddr[]) => mas.filter((ma) => isAnnounceable(ma, opts.announceLoopback)),
    },
    transports: [tcp(), circuitRelayTransport({ reservationCompletionTimeout: 10_000 })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: YAMUX_MAX_WINDOW } })],
    connectionGater: createMembershipGater(opts.directory, opts.gateCounters, {
      connectionsTo: (peer) => connectionsTo(peer),
    }),
    connectionManager: {
      maxConnections: 10_000,
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: PENDING_LIMITS.maxPending,
      inboundUpgradeTimeout: PENDING_LIMITS.inboundUpgradeTimeoutMs,
    },
    // libp2p's monitor pings every connection and aborts it when one ping times out: under
    // bulk load the ping queues behind seconds of tunnel data and healthy relayed tunnels
    // died ("operation was aborted due to timeout"). overlay/keepalive.ts replaces it and
    // counts any traffic as life.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      [INTERNALS_SERVICE]: internalsService,
      ...(opts.relay
        ? {
            relay: circuitRelayServer({
              // With the defaults a relayed connection dies after 128 KiB / 2 min: ours are tunnels.
              reservations: { applyDefaultLimit: false, maxReservations: 10_000 },
              maxInboundHopStreams: 10_000,
              maxOutboundHopStreams: 10_000,
            }),
          }
        : {}),
    },
  });
  connectionsTo = (peer) => node.getConnections(peer).length;
  limitPendingPerIp(node, PENDING_LIMITS.maxPendingPerIp, opts.inboundCounters);
  return node;
}

/**
 * Caps the inbound upgrades in progress per remote IP. libp2p has only a global cap; the
 * upgrader is where an inbound connection waits for its handshake (the TCP listener and
 * the relay transport both hand it there), so this wraps its upgradeInbound. Relayed
 * connections are exempt: their address is the relay's, shared by every peer it relays,
 * and they arrive over an authenticated connection from a member.
 */
function limitPendingPerIp(host: Libp2p, maxPerIp: number, counters?: InboundCounters): void {
  const pending = new Map<string, number>();
  wrapUpgradeInbound(
    host,
    (upgradeInbound) =>
      (async (maConn: MultiaddrConnection, opts: Parameters<Upgrader['upgradeInbound']>[1]) => {
        const ip = isCircuit(maConn.remoteAddr) ? undefined : ipOf(maConn.remoteAddr);
        if (ip === undefined) return upgradeInbound(maConn, opts);
        const n = pending.get(ip) ?? 0;
        if (n >= maxPerIp) {
          if (counters) counters.refusedPendingPerIp++;
          throw new Error(`inbound connection from ${ip} refused: ${n} handshakes from that IP already in progress`);
        }
        pending.set(ip, n + 1);
        try {
          return await upgradeInbound(maConn, opts);
        } finally {
          const left = (pending.get(ip) ?? 1) - 1;
          if (left > 0) pending.set(ip, left);
          else pending.delete(ip);
        }
      }) as Upgrader['upgradeInbound'],
  );
}

export type Host = Awaited<ReturnType<typeof createHost>>;
