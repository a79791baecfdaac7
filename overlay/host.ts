// The libp2p host: TCP + noise + yamux, identify, ping, circuit relay v2 (server on relay
// nodes with the data/duration limits off, client everywhere), and the membership gater.
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { identify } from '@libp2p/identify';
import type {
  ComponentLogger,
  Connection,
  Libp2p,
  Libp2pEvents,
  PeerId,
  PrivateKey,
  TypedEventTarget,
  Upgrader,
} from '@libp2p/interface';
import { ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import type { Multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import type { PeerDirectory } from './directory.ts';
import { createMembershipGater, type GateCounters } from './gater.ts';

/** The libp2p internals the hole punch and the reservation keeper need. */
export interface HostInternals {
  peerId: PeerId;
  upgrader: Upgrader;
  events: TypedEventTarget<Libp2pEvents>;
  logger: ComponentLogger;
  connectionManager: { openConnection(target: Multiaddr | PeerId, options?: object): Promise<Connection> };
  transportManager: {
    getTransports(): Array<{ [Symbol.toStringTag]?: string }>;
    dial(ma: Multiaddr, options?: { signal?: AbortSignal }): Promise<Connection>;
  };
}

export interface HostOptions {
  privateKey: PrivateKey;
  listen: string[];
  announce?: string[];
  relay: boolean;
  directory: PeerDirectory;
  gateCounters: GateCounters;
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
  const node = await createLibp2p({
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen, ...(opts.announce ? { announce: opts.announce } : {}) },
    transports: [tcp(), circuitRelayTransport({ reservationCompletionTimeout: 10_000 })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: YAMUX_MAX_WINDOW } })],
    connectionGater: createMembershipGater(opts.directory, opts.gateCounters),
    connectionManager: { maxConnections: 10_000, inboundConnectionThreshold: 1000 },
    // libp2p's monitor pings every connection and aborts it when one ping times out: under
    // bulk load the ping queues behind seconds of tunnel data and healthy relayed tunnels
    // died ("operation was aborted due to timeout"). overlay/keepalive.ts replaces it and
    // counts any traffic as life.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      internals: (components: HostInternals): { components: HostInternals } => ({ components }),
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
  return node;
}

export type Host = Awaited<ReturnType<typeof createHost>>;

export function internalsOf(host: Host): HostInternals {
  return (host as unknown as Libp2p<{ internals: { components: HostInternals } }>).services.internals.components;
}

/** The circuit relay client's reservation store (not exported by the package's types). */
export interface ReservationStoreLike {
  hasReservation(peerId: PeerId): boolean;
  addRelay(peerId: PeerId, type: 'configured' | 'discovered'): Promise<unknown>;
}

export function reservationStoreOf(host: Host): ReservationStoreLike {
  const transport = internalsOf(host)
    .transportManager.getTransports()
    .find((t) => t[Symbol.toStringTag] === '@libp2p/circuit-relay-v2-transport') as
    | { reservationStore?: ReservationStoreLike }
    | undefined;
  if (transport?.reservationStore === undefined) throw new Error('circuit relay transport has no reservation store');
  return transport.reservationStore;
}
