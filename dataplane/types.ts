// The dataplane's shared vocabulary. Other packages (overlay/, agent/) depend on these
// shapes; keep them small and stable.

/**
 * One packet as it crosses the dataplane: the virtio_net_hdr that came with it from the
 * TUN (or that must go with it into the peer's TUN) and the IP packet itself. With TSO
 * on, `data` may be a GSO super-packet of up to 64 KiB; `vnet` says how to segment it.
 */
export interface Packet {
  /** virtio_net_hdr, VNET_HDR_LEN bytes (all zero = a plain packet, no offload). */
  vnet: Uint8Array;
  /** The IPv4 or IPv6 packet. */
  data: Uint8Array;
}

/** Size of struct virtio_net_hdr (legacy, without num_buffers) used on the TUN. */
export const VNET_HDR_LEN = 10;

/**
 * Where the forwarder sends packets for one remote node: a tunnel stream (overlay/), or a
 * UDP session (dataplane/udp-session.ts) that takes packets without a frame codec.
 */
export interface PeerLink {
  /**
   * Queues one encoded frame (many packets) for the peer. Returns false when the link's
   * bounded queue is full and the frame was dropped (the caller counts the drop).
   */
  send(frame: Uint8Array): boolean;
  /**
   * Sends a batch of packets as they are (GSO super-packets included: the link segments
   * them). Preferred over send() when present. Returns how many packets were accepted; the
   * packets' views are only valid during the call.
   */
  sendPackets?(packets: Packet[]): number;
  /**
   * Largest inner packet the link carries (its tunnel MTU). Bigger packets that must not be
   * fragmented are answered with ICMP Fragmentation Needed / Packet Too Big. Default: the
   * forwarder's tunnelMtu for packet links, no limit for frame links.
   */
  readonly mtu?: number;
}

/** A packet device the forwarder drives: the TUN (dataplane/tun-device.ts) or a test double. */
export interface PacketIO {
  /** Whether packets carry vnet headers with GSO super-packets (TUN offloads on). */
  readonly offload: boolean;
  /** Starts delivering batches read from the device to `handler`; packets are valid until it returns. */
  onBatch(handler: (batch: Packet[]) => void): void;
  /**
   * Writes a batch of any packets, super-packets included (the device segments what it
   * cannot offload); returns how many of them the device accepted.
   */
  write(batch: Packet[]): number;
}
