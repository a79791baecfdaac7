// The membership gate: only peer IDs published by cluster Nodes (the directory) may connect
// to us, be dialled by us, reserve a slot on our relay, or be relayed (both ends).
import type { ConnectionGater, PeerId } from '@libp2p/interface';
import type { PeerDirectory } from './directory.ts';

export interface GateCounters {
  denied: Record<string, number>;
}

/**
 * A member legitimately holds a few connections to us (relayed both ways, direct, a punched
 * one during a switch); more than this from one peer is refused after the handshake.
 */
export const MAX_CONNECTIONS_PER_PEER = 8;

export interface GaterLimits {
  /** How many connections the host has to a peer now (late-bound: the host exists after the gater). */
  connectionsTo?: (peer: PeerId) => number;
  maxConnectionsPerPeer?: number;
}

export function createMembershipGater(
  directory: PeerDirectory,
  counters: GateCounters,
  limits: GaterLimits = {},
): ConnectionGater {
  const deny = (what: string, ...peers: PeerId[]): boolean => {
    const stranger = peers.some((p) => !directory.has(p.toString()));
    if (stranger) counters.denied[what] = (counters.denied[what] ?? 0) + 1;
    return stranger;
  };
  const max = limits.maxConnectionsPerPeer ?? MAX_CONNECTIONS_PER_PEER;
  const tooMany = (peer: PeerId): boolean => {
    if ((limits.connectionsTo?.(peer) ?? 0) < max) return false;
    counters.denied['per-peer-connections'] = (counters.denied['per-peer-connections'] ?? 0) + 1;
    return true;
  };
  return {
    // Addresses are never filtered by kind: TEST-NET and RFC 1918 are both legitimate here.
    denyDialMultiaddr: () => false,
    denyDialPeer: (peer) => deny('dial', peer),
    denyInboundEncryptedConnection: (peer) => deny('inbound', peer),
    denyOutboundEncryptedConnection: (peer) => deny('outbound', peer),
    denyInboundUpgradedConnection: (peer) => deny('inbound', peer) || tooMany(peer),
    denyOutboundUpgradedConnection: (peer) => deny('outbound', peer),
    denyInboundRelayReservation: (source) => deny('reservation', source),
    denyOutboundRelayedConnection: (source, destination) => deny('relay-hop', source, destination),
    denyInboundRelayedConnection: (relay, remote) => deny('relayed-inbound', relay, remote),
  };
}
