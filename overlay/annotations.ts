// How an agent publishes itself on its own Node object, and how every agent reads its
// peers. Written by agent/, parsed by overlay/'s peer directory.

/** Every label and annotation edgemesh-cni reads or writes starts with this (the Node cache keeps only these). */
export const ANNOTATION_PREFIX = 'edgemesh.io/';
export const Annotations = {
  /** libp2p peer ID (base58 string). */
  peerId: 'edgemesh.io/peer-id',
  /** JSON array of multiaddr strings the node listens on / can be dialled at. */
  multiaddrs: 'edgemesh.io/multiaddrs',
  /** Comma-separated pod CIDRs owned by the node (v4 and/or v6). */
  podCidrs: 'edgemesh.io/pod-cidrs',
  /** Site (LAN) name: nodes of one site reach each other by host routes, no tunnel. */
  site: 'edgemesh.io/site',
  /** The node's address inside its site (the next hop for host-gw routes). */
  nodeIp: 'edgemesh.io/node-ip',
  /** TCP port used for hole punching (simultaneous open), announced to peers. */
  punchPort: 'edgemesh.io/punch-port',
} as const;

export const Labels = {
  /** Nodes with a public address that serve circuit relay v2 for cluster peers. */
  relay: 'edgemesh.io/relay',
  /** Alternative to the site annotation for operators who prefer labels. */
  site: 'edgemesh.io/site',
} as const;
