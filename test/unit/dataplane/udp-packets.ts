// Packet builders for the UDP session engine's unit tests: TCP/UDP over IPv4/IPv6 super-
// packets with the virtio_net_hdr a TUN with offloads hands the forwarder.
import { foldSum, pseudoHeaderSum, setIpv4HeaderChecksum } from '../../../dataplane/checksum.ts';
import type { Packet } from '../../../dataplane/types.ts';
import { GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 } from '../../../dataplane/vnet-header.ts';

export interface SuperSpec {
  v6: boolean;
  udp?: boolean;
  payload: number;
  mss: number;
  seq?: number;
  id?: number;
  tcpFlags?: number;
  /** TCP options bytes (multiple of 4). */
  options?: number;
}

/** A super-packet as a TUN delivers it: partial transport checksum, vnet with NEEDS_CSUM. */
export function superPacket(s: SuperSpec): Packet {
  const ipLen = s.v6 ? 40 : 20;
  const l4Len = s.udp ? 8 : 20 + (s.options ?? 12);
  const total = ipLen + l4Len + s.payload;
  const d = new Uint8Array(total);
  const dv = new DataView(d.buffer);
  const proto = s.udp ? 17 : 6;
  if (s.v6) {
    d[0] = 0x60;
    dv.setUint16(4, l4Len + s.payload);
    d[6] = proto;
    d[7] = 64;
    d.set([0xfd, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5], 8);
    d.set([0xfd, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], 24);
  } else {
    d[0] = 0x45;
    dv.setUint16(2, total);
    dv.setUint16(4, s.id ?? 0x1234);
    d[6] = 0x40; // DF
    d[8] = 64;
    d[9] = proto;
    d.set([10, 201, 0, 5], 12);
    d.set([10, 202, 0, 7], 16);
    setIpv4HeaderChecksum(d, 20);
  }
  dv.setUint16(ipLen, 40000);
  dv.setUint16(ipLen + 2, 5201);
  if (s.udp) {
    dv.setUint16(ipLen + 4, l4Len + s.payload);
  } else {
    dv.setUint32(ipLen + 4, s.seq ?? 0xfffff000); // wraps within a large super-packet
    dv.setUint32(ipLen + 8, 77);
    d[ipLen + 12] = (l4Len / 4) << 4;
    d[ipLen + 13] = s.tcpFlags ?? 0x18;
    dv.setUint16(ipLen + 14, 502);
    for (let i = 20; i < l4Len; i++) d[ipLen + i] = 1; // NOPs
  }
  for (let i = ipLen + l4Len; i < total; i++) d[i] = (i * 7 + 3) & 0xff;
  const src = s.v6 ? d.subarray(8, 24) : d.subarray(12, 16);
  const dst = s.v6 ? d.subarray(24, 40) : d.subarray(16, 20);
  const csumAt = ipLen + (s.udp ? 6 : 16);
  // Partial checksum: the folded pseudo-header sum over the whole super-packet's length.
  dv.setUint16(csumAt, foldSum(pseudoHeaderSum(src, dst, proto, l4Len + s.payload)));
  const vnet = new Uint8Array(10);
  const vv = new DataView(vnet.buffer);
  const gso = s.payload > s.mss;
  vnet[0] = 1; // NEEDS_CSUM
  vnet[1] = gso ? (s.udp ? GSO_UDP_L4 : s.v6 ? GSO_TCPV6 : GSO_TCPV4) : 0;
  vv.setUint16(2, ipLen + l4Len, true);
  vv.setUint16(4, gso ? s.mss : 0, true);
  vv.setUint16(6, ipLen, true);
  vv.setUint16(8, s.udp ? 6 : 16, true);
  return { vnet, data: d };
}
