// Every place the overlay reaches past libp2p's public API, in one module. libp2p keeps its
// components (upgrader, transport manager, event bus), the circuit relay client's
// reservation store and a connection's raw socket to itself; the hole punch, the splice,
// the relayed dial, the per-IP handshake cap and the keepalive need them. Nothing here is
// covered by semver: test/unit/overlay/libp2p-internals.test.ts checks each of them on a
// real host and fails on any other libp2p version than WRITTEN_AGAINST.
import type {
  ComponentLogger,
  Connection,
  Libp2p,
  Libp2pEvents,
  PeerId,
  TypedEventTarget,
  Upgrader,
} from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';

/**
 * The package versions this adapter was written against (and the test pins): on an upgrade,
 * re-check every accessor below against the new sources before changing these.
 */
export const WRITTEN_AGAINST = {
  libp2p: '3.3.11',
  '@libp2p/circuit-relay-v2': '4.2.13',
} as const;

/** The libp2p components the hole punch, the splice and the relayed dial need. */
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

/**
 * The service createHost registers under INTERNALS_SERVICE: libp2p hands every service
 * factory its components, and this one only keeps them.
 */
export const INTERNALS_SERVICE = 'internals';
export function internalsService(components: HostInternals): { components: HostInternals } {
  return { components };
}

export function internalsOf(host: Libp2p): HostInternals {
  const services = host.services as Record<string, { components?: HostInternals } | undefined>;
  const components = services[INTERNALS_SERVICE]?.components;
  if (components === undefined) throw new Error(`libp2p host has no '${INTERNALS_SERVICE}' service (see createHost)`);
  return components;
}

/**
 * A dial straight to the transport, past libp2p's dial queue (the queue hands the circuit
 * transport a per-address timeout signal it never clears; callers keep their own deadline).
 */
export function dialTransport(host: Libp2p, ma: Multiaddr, options: { signal?: AbortSignal }): Promise<Connection> {
  return internalsOf(host).transportManager.dial(ma, options);
}

/**
 * Replaces the upgrader's upgradeInbound with `wrap(original)`: the TCP listener and the
 * relay transport both hand inbound connections there, so a wrapper sees every handshake.
 */
export function wrapUpgradeInbound(
  host: Libp2p,
  wrap: (original: Upgrader['upgradeInbound']) => Upgrader['upgradeInbound'],
): void {
  const upgrader = internalsOf(host).upgrader;
  upgrader.upgradeInbound = wrap(upgrader.upgradeInbound.bind(upgrader));
}

/** The circuit relay client's reservation store (not exported by the package's types). */
export interface ReservationStoreLike {
  hasReservation(peerId: PeerId): boolean;
  addRelay(peerId: PeerId, type: 'configured' | 'discovered'): Promise<unknown>;
}

export const CIRCUIT_RELAY_TRANSPORT_TAG = '@libp2p/circuit-relay-v2-transport';

export function reservationStoreOf(host: Libp2p): ReservationStoreLike {
  const transport = internalsOf(host)
    .transportManager.getTransports()
    .find((t) => t[Symbol.toStringTag] === CIRCUIT_RELAY_TRANSPORT_TAG) as
    | { reservationStore?: ReservationStoreLike }
    | undefined;
  if (transport?.reservationStore === undefined) throw new Error('circuit relay transport has no reservation store');
  return transport.reservationStore;
}

/**
 * The raw MultiaddrConnection under a libp2p Connection (its untyped `maConn` field): it
 * emits 'message' for every chunk read and 'drain' when the socket empties, below the muxer.
 */
export function rawConnectionOf(connection: Connection): EventTarget | undefined {
  return (connection as unknown as { maConn?: EventTarget }).maConn;
}
