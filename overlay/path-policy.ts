// Which path a tunnel to one peer should take. Pure: decided only from our own directory
// facts (site, public addresses), never from libp2p's address filters.

export type PathPlan =
  /** Same site: a kernel route via the peer's node IP, no tunnel at all. */
  | { kind: 'host-gw' }
  /** We dial the peer's public address. */
  | { kind: 'direct' }
  /** The peer cannot be dialled but can dial us: reach it over a relay, ask it to dial back. */
  | { kind: 'reverse' }
  /** Both behind NAT: relay first (traffic flows at once), hole punch in the background. */
  | { kind: 'relayed'; punch: boolean }
  | { kind: 'none'; reason: string };

export interface PolicySelf {
  site: string;
  publicReachable: boolean;
  punchPort?: number;
}

export interface PolicyPeer {
  site: string;
  publicReachable: boolean;
  punchPort?: number;
}

export function choosePath(self: PolicySelf, peer: PolicyPeer, relaysAvailable: boolean): PathPlan {
  if (self.site === peer.site) return { kind: 'host-gw' };
  if (peer.publicReachable) return { kind: 'direct' };
  if (!relaysAvailable) return { kind: 'none', reason: 'peer is behind NAT and no relay is known' };
  if (self.publicReachable) return { kind: 'reverse' };
  return { kind: 'relayed', punch: self.punchPort !== undefined && peer.punchPort !== undefined };
}

/**
 * Which of two peers runs the hole punch: exactly one must, or both would race to be the
 * noise initiator. The smaller peer ID leads; deterministic and needs no negotiation.
 */
export function leadsPunch(selfPeerId: string, peerPeerId: string): boolean {
  return selfPeerId < peerPeerId;
}
