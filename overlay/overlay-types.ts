// The overlay's public types besides the Overlay interface itself (overlay/overlay.ts, which
// re-exports them): its options, what it needs of the forwarder, its per-peer status, its
// counters and events. A module of their own so the overlay's services can name them
// without importing the overlay.
import type { Logger } from 'pino';
import type { Packet, PeerLink } from '../dataplane/types.ts';
import type { PeerDirectory } from './directory.ts';
import type { PunchCounters } from './hole-punch.ts';
import type { PathKind } from './path-kind.ts';
import type { LadderTuning, TransportMode } from './path-ladder.ts';
import type { RelayBindingCounters, RelayLike } from './relay-binding.ts';
import type { SplicePathCounters } from './splice-path.ts';
import type { SpliceRelay } from './splice-relay.ts';
import type { UdpCarrierCounters, UdpSocketFactory } from './udp-carrier.ts';

/** What the overlay needs from the dataplane's forwarder (dataplane/forwarder.ts). */
export interface ForwarderLike {
  attachLink(node: string, link: PeerLink): void;
  detachLink(node: string): void;
  /** One whole frame from the peer; throws (FrameError) on garbage: the stream is reset. */
  receive(node: string, chunk: Uint8Array): void;
  /** Packets a peer's UDP session opened (inbound policy, then the TUN). */
  receivePackets?(node: string, packets: Packet[]): void;
  /** Subscribes to peers that have traffic but no link: the overlay connects to them. */
  onPeerNeeded?(handler: (node: string) => void): void;
}

/** What the overlay knows of one peer; the agent merges it into its PeerStatus (agent/status.ts). */
export interface OverlayPeerStatus {
  node: string;
  site: string;
  podCidrs: string[];
  path: PathKind;
  rttMs: number | undefined;
  txBytes: number;
  rxBytes: number;
  drops: number;
  /** Epoch ms of the last byte in either direction, undefined when never connected. */
  lastSeen: number | undefined;
  /** The remote multiaddr carrying the tunnel now. */
  remoteAddr: string | undefined;
  /** Milliseconds from the first UDP session with the peer to its first working UDP path. */
  msToDirect: number | undefined;
  /** Since when (epoch ms) the current path carries the peer; undefined when not known. */
  pathSince: number | undefined;
}

export interface OverlayCounters {
  punch: PunchCounters;
  gateDenied: Record<string, number>;
  /** Frames the peer sent that the forwarder rejected (stream reset). */
  badFrames: number;
  /** Frame headers the tunnel reader refused before buffering a body (garbage, oversized; stream reset). */
  badFrameHeaders: number;
  tunnelsOpened: number;
  pathChanges: number;
  /** Observed-address queries this node answered / refused (relays answer them). */
  observed: { answered: number; refused: number };
  /** UDP sessions, probing and the path ladder (absent without a UDP socket). */
  udp?: UdpCarrierCounters;
  /** Binding requests this relay node served (absent unless it runs a UDP relay). */
  relayBindings?: RelayBindingCounters;
  /** The stream fallback's TCP splice: ours as a member, and the relay's when we run one. */
  splice?: SplicePathCounters;
}

export interface OverlayOptions {
  nodeName: string;
  site: string;
  keyPath: string;
  listen: string[];
  announce?: string[];
  punchPort: number;
  relay: boolean;
  directory: PeerDirectory;
  forwarder: ForwarderLike;
  logger?: Logger;
  /** Offload capability announced in the tunnel handshake (TUN with vnet_hdr + GSO). */
  offload?: boolean;
  /** Tunnels without traffic for this long are closed (connections on demand). */
  idleTimeoutMs?: number;
  /** Keepalive on direct connections: ping interval and how long a silent path lives. */
  keepaliveIntervalMs?: number;
  deadAfterMs?: number;
  /** Bound of each tunnel's send queue. */
  maxQueueBytes?: number;
  /** Punch holes in the background when policy allows (default true; benches turn it off). */
  autoPunch?: boolean;
  /** The node's UDP data socket (absent: the stream tunnel carries everything). */
  udp?: UdpSocketFactory;
  /** auto: UDP where it answers, else the stream; udp / stream pin one. Default auto. */
  transport?: TransportMode;
  /** Interfaces whose addresses are not offered as UDP candidates (the TUN, the pod bridge). */
  udpExcludeInterfaces?: string[];
  udpRekeyAfterMs?: number;
  udpKeepaliveMs?: number;
  ladderTuning?: LadderTuning;
  /**
   * A relay node's UDP relay (dataplane/udp-relay.ts, opened by the agent): bindings for
   * cluster members are granted over /edgemesh/udp-relay/1.0.0. The caller closes it after stop().
   */
  udpRelay?: RelayLike;
  /**
   * A relay node's TCP splice (overlay/splice-relay.ts, opened by the caller, closed after
   * stop()): the relayed stream fallback's data path, granted over /edgemesh/splice/1.0.0.
   */
  spliceRelay?: SpliceRelay;
}

export interface OverlayEvents {
  /** A peer's visible path changed (e.g. relayed → udp-punched). */
  path: [node: string, from: PathKind, to: PathKind];
}
