// The path vocabulary shared by the overlay's modules, the agent's status, the lab and the
// CLI: one place, so the ladder's modules need not import the overlay that wires them.

/**
 * How traffic reaches a peer, best first: kernel route (same site), UDP session straight to
 * the peer, UDP session through punched NAT mappings, UDP session through a relay node's UDP
 * relay (sealed datagrams forwarded unopened), then the libp2p stream tunnel over a direct,
 * hole-punched or relayed connection.
 */
export type PathKind =
  | 'host-gw'
  | 'udp-direct'
  | 'udp-punched'
  | 'udp-relayed'
  | 'direct'
  | 'hole-punched'
  | 'relayed'
  | 'none';
