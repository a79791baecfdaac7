// Software GSO: turns a super-packet (a TCP or UDP payload of up to 64 KiB with one set of
// headers and a virtio_net_hdr saying how to cut it) into wire-sized packets, for a TUN
// that has no offloads. Also completes a NEEDS_CSUM checksum for a plain packet. The
// rules follow the kernel's tcp_gso_segment/__udp_gso_segment: sequence numbers advance
// by gso_size, IPv4 ids increment, FIN/PSH only on the last segment, CWR only on the
// first, every length and checksum recomputed.
import { checksumOf, pseudoHeaderSum, setIpv4HeaderChecksum, sumWords } from './checksum.ts';
import { type Packet, VNET_HDR_LEN } from './types.ts';
import { GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, isGso, needsChecksum, readVnetHeader } from './vnet-header.ts';

const PROTO_TCP = 6;
const PROTO_UDP = 17;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/**
 * Bounds on what a peer's super-packet may ask of us. A peer chooses gso_size: 1 on a
 * large frame would make one packet into millions of allocations. Real super-packets are
 * one IP datagram (≤ 64 KiB: the IPv4 total length and the IPv6 payload length are 16 bits)
 * cut at a TCP MSS or UDP segment size no smaller than Linux's tcp_min_snd_mss (48).
 */
export const MAX_SUPER_PACKET_BYTES = 65535 + 40;
export const MIN_GSO_SIZE = 48;
/** The most segments a super-packet within the two bounds above can make. */
export const MAX_SEGMENTS = Math.ceil(MAX_SUPER_PACKET_BYTES / MIN_GSO_SIZE);

export type SegmentRejectReason =
  | 'gso-unsupported'
  | 'gso-malformed'
  | 'csum-malformed'
  | 'gso-too-large'
  | 'gso-size-too-small'
  | 'gso-too-many-segments';
export type SegmentResult = { ok: true; packets: Packet[] } | { ok: false; reason: SegmentRejectReason };

const reject = (reason: SegmentRejectReason): SegmentResult => ({ ok: false, reason });

/**
 * What a TUN without offloads can take: the packet itself (vnet all zero), its segments if
 * it is a super-packet, or the packet with its checksum completed if it was partial.
 * Completing a checksum writes into `packet.data` (the caller owns that buffer).
 */
export function toPlainPackets(packet: Packet): SegmentResult {
  if (isGso(packet.vnet)) return segmentSuperPacket(packet);
  if (needsChecksum(packet.vnet)) return completeChecksum(packet);
  return { ok: true, packets: [packet] };
}

/** Completes a NEEDS_CSUM packet in place: ones'-complement sum from csum_start to the end. */
export function completeChecksum(packet: Packet): SegmentResult {
  const h = readVnetHeader(packet.vnet);
  const data = packet.data;
  const field = h.csumStart + h.csumOffset;
  if (h.csumStart < 20 || field + 2 > data.length) return reject('csum-malformed');
  // The field holds the pseudo-header sum already (that is what "partial" means).
  let c = checksumOf(sumWords(data, h.csumStart, data.length));
  if (c === 0) c = 0xffff; // as the kernel does (CSUM_MANGLED_0): 0 means "no checksum" to UDP
  data[field] = c >> 8;
  data[field + 1] = c & 0xff;
  return { ok: true, packets: [{ vnet: new Uint8Array(VNET_HDR_LEN), data }] };
}

/** Cuts a TCPv4/TCPv6/UDP-L4 super-packet into gso_size pieces with complete headers. */
export function segmentSuperPacket(packet: Packet): SegmentResult {
  const h = readVnetHeader(packet.vnet);
  const data = packet.data;
  if (data.length < 20) return reject('gso-malformed');
  // Checked before anything is allocated: the cost of a super-packet is bounded by these.
  if (data.length > MAX_SUPER_PACKET_BYTES) return reject('gso-too-large');
  if (h.gsoSize < MIN_GSO_SIZE) return reject(h.gsoSize === 0 ? 'gso-malformed' : 'gso-size-too-small');
  const version = data[0]! >> 4;
  const tcp = h.gsoType === GSO_TCPV4 || h.gsoType === GSO_TCPV6;
  if (!tcp && h.gsoType !== GSO_UDP_L4) return reject('gso-unsupported'); // UFO (IP fragments) is not used by TUNs
  if ((h.gsoType === GSO_TCPV4 && version !== 4) || (h.gsoType === GSO_TCPV6 && version !== 6)) {
    return reject('gso-malformed');
  }
  if (version !== 4 && version !== 6) return reject('gso-malformed');
  const ipLen = version === 4 ? (data[0]! & 0x0f) * 4 : 40;
  const protocol = version === 4 ? data[9]! : data[6]!;
  if (ipLen < 20 || data.length < ipLen + 8) return reject('gso-malformed');
  // IPv6 extension headers before TCP/UDP would need walking; TUN super-packets carry none.
  if (protocol !== (tcp ? PROTO_TCP : PROTO_UDP)) return reject(version === 6 ? 'gso-unsupported' : 'gso-malformed');
  const l4Len = tcp ? (data[ipLen + 12]! >> 4) * 4 : 8;
  const hdrLen = ipLen + l4Len;
  const mss = h.gsoSize;
  const payloadLen = data.length - hdrLen;
  if (l4Len < 8 || (tcp && l4Len < 20) || payloadLen <= 0 || mss === 0) return reject('gso-malformed');

  const src = version === 4 ? data.subarray(12, 16) : data.subarray(8, 24);
  const dst = version === 4 ? data.subarray(16, 20) : data.subarray(24, 40);
  const seq0 = readU32(data, ipLen + 4);
  const id0 = version === 4 ? (data[4]! << 8) | data[5]! : 0;
  const tcpFlags = data[ipLen + 13]!;
  const count = Math.ceil(payloadLen / mss);
  if (count > MAX_SEGMENTS) return reject('gso-too-many-segments'); // unreachable within the bounds above; kept as the last word
  const checksumAt = ipLen + (tcp ? 16 : 6);
  const packets: Packet[] = [];
  for (let i = 0; i < count; i++) {
    const from = hdrLen + i * mss;
    const segPayload = Math.min(mss, data.length - from);
    const seg = new Uint8Array(hdrLen + segPayload);
    seg.set(data.subarray(0, hdrLen));
    seg.set(data.subarray(from, from + segPayload), hdrLen);
    if (version === 4) {
      writeU16(seg, 2, seg.length);
      writeU16(seg, 4, (id0 + i) & 0xffff);
      setIpv4HeaderChecksum(seg, ipLen);
    } else {
      writeU16(seg, 4, seg.length - 40);
    }
    if (tcp) {
      writeU32(seg, ipLen + 4, seq0 + i * mss);
      let flags = tcpFlags;
      if (i < count - 1) flags &= ~(TCP_FIN | TCP_PSH);
      if (i > 0) flags &= ~TCP_CWR;
      seg[ipLen + 13] = flags;
    } else {
      writeU16(seg, ipLen + 4, l4Len + segPayload);
    }
    seg[checksumAt] = 0;
    seg[checksumAt + 1] = 0;
    let c = checksumOf(sumWords(seg, ipLen, seg.length, pseudoHeaderSum(src, dst, protocol, l4Len + segPayload)));
    if (!tcp && c === 0) c = 0xffff;
    writeU16(seg, checksumAt, c);
    packets.push({ vnet: new Uint8Array(VNET_HDR_LEN), data: seg });
  }
  return { ok: true, packets };
}

function readU32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

function writeU16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

function writeU32(b: Uint8Array, at: number, v: number): void {
  const u = v >>> 0; // sequence numbers wrap modulo 2^32
  b[at] = u >>> 24;
  b[at + 1] = (u >>> 16) & 0xff;
  b[at + 2] = (u >>> 8) & 0xff;
  b[at + 3] = u & 0xff;
}
