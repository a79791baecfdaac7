// struct virtio_net_hdr, the offload header a TUN with IFF_VNET_HDR puts before every
// packet: the one place its constants and fields are spelled out for the dataplane.
// Little-endian: the TUN uses the host's byte order (x86, arm64).

export const VNET_F_NEEDS_CSUM = 1;
/** gso_type values (the low 7 bits; GSO_ECN is a flag on top). */
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_UDP_L4 = 5;
export const GSO_ECN = 0x80;

export interface VnetHeader {
  flags: number;
  /** gso_type without the ECN bit. */
  gsoType: number;
  ecn: boolean;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function readVnetHeader(vnet: Uint8Array): VnetHeader {
  const u16 = (at: number) => (vnet.length >= at + 2 ? vnet[at]! | (vnet[at + 1]! << 8) : 0);
  const gso = vnet[1] ?? 0;
  return {
    flags: vnet[0] ?? 0,
    gsoType: gso & 0x7f,
    ecn: (gso & GSO_ECN) !== 0,
    hdrLen: u16(2),
    gsoSize: u16(4),
    csumStart: u16(6),
    csumOffset: u16(8),
  };
}

/** gso_type without the ECN bit (no object per packet: this runs per packet). */
export function gsoType(vnet: Uint8Array): number {
  return (vnet[1] ?? 0) & 0x7f;
}

/** Whether the packet is a GSO super-packet (must be segmented for a TUN without offloads). */
export function isGso(vnet: Uint8Array): boolean {
  return gsoType(vnet) !== GSO_NONE;
}

/** Whether the packet's transport checksum is still partial (the receiver must complete it). */
export function needsChecksum(vnet: Uint8Array): boolean {
  return ((vnet[0] ?? 0) & VNET_F_NEEDS_CSUM) !== 0;
}
