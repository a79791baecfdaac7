// Path MTU across the overlay. A UDP session carries one inner packet per datagram, so an
// inner packet (or a GSO super-packet's segment) larger than the tunnel MTU cannot go. If
// it must not be fragmented (IPv4 DF, always for IPv6) the sending pod gets ICMP
// Fragmentation Needed / ICMPv6 Packet Too Big with the tunnel MTU, written back into the
// TUN as if a router on the way had sent it, so its kernel lowers the path MTU (RFC 1191,
// RFC 8201) and TCP shrinks its segments.
import { checksumOf, pseudoHeaderSum, setIpv4HeaderChecksum, sumWords } from './checksum.ts';
import type { Packet } from './types.ts';
import { GSO_NONE, GSO_UDP_L4, gsoType } from './vnet-header.ts';

const PROTO_ICMP = 1;
const PROTO_ICMPV6 = 58;
/** RFC 1812: an ICMPv4 error should not exceed 576 bytes. */
const ICMP4_MAX = 576;
/** RFC 4443: an ICMPv6 error must not exceed the minimum IPv6 MTU. */
const ICMP6_MAX = 1280;
const IPV6_MIN_MTU = 1280;

/**
 * The largest packet this one becomes on the wire: itself, or for a GSO super-packet one
 * full segment (headers + gso_size).
 */
export function wireSize(p: Packet): number {
  const gso = gsoType(p.vnet);
  if (gso === GSO_NONE) return p.data.length;
  const d = p.data;
  const gsoSize = (p.vnet[4] ?? 0) | ((p.vnet[5] ?? 0) << 8);
  const v6 = d[0]! >> 4 === 6;
  const ipLen = v6 ? 40 : (d[0]! & 0x0f) * 4;
  const l4Len = gso === GSO_UDP_L4 ? 8 : ((d[ipLen + 12] ?? 0) >> 4) * 4;
  return Math.min(d.length, ipLen + l4Len + gsoSize);
}

/** Whether the packet may not be fragmented on the way: IPv6 always, IPv4 with DF set. */
export function mustNotFragment(data: Uint8Array): boolean {
  return data[0]! >> 4 === 6 || ((data[6] ?? 0) & 0x40) !== 0;
}

/** ICMP errors are never answered with ICMP errors (RFC 1122 3.2.2, RFC 4443 2.4). */
function isIcmpError(data: Uint8Array): boolean {
  if (data[0]! >> 4 === 6) return data[6] === PROTO_ICMPV6 && data.length > 40 && data[40]! < 128;
  const ipLen = (data[0]! & 0x0f) * 4;
  const fragmentOffset = (((data[6] ?? 0) & 0x1f) << 8) | (data[7] ?? 0);
  if (fragmentOffset !== 0) return true; // not the first fragment: nothing to quote usefully
  const type = data[ipLen];
  return data[9] === PROTO_ICMP && type !== undefined && type !== 0 && type !== 8;
}

/**
 * The ICMP error telling `data`'s sender that `mtu` is the most that fits, from `data`'s
 * destination (the overlay acts as the router that could not forward). Undefined for
 * packets that must not be answered (ICMP errors, later fragments).
 */
export function packetTooBig(data: Uint8Array, mtu: number): Uint8Array | undefined {
  if (data.length < 20 || isIcmpError(data)) return undefined;
  if (data[0]! >> 4 === 6) {
    if (data.length < 40) return undefined;
    const quote = data.subarray(0, Math.min(data.length, ICMP6_MAX - 48));
    const out = new Uint8Array(48 + quote.length);
    const dv = new DataView(out.buffer);
    out[0] = 0x60;
    dv.setUint16(4, 8 + quote.length);
    out[6] = PROTO_ICMPV6;
    out[7] = 64;
    out.set(data.subarray(24, 40), 8); // from the unreachable side's address
    out.set(data.subarray(8, 24), 24); // to the sender
    out[40] = 2; // Packet Too Big
    dv.setUint32(44, Math.max(mtu, IPV6_MIN_MTU));
    out.set(quote, 48);
    const sum = sumWords(
      out,
      40,
      out.length,
      pseudoHeaderSum(out.subarray(8, 24), out.subarray(24, 40), PROTO_ICMPV6, 8 + quote.length),
    );
    dv.setUint16(42, checksumOf(sum));
    return out;
  }
  const quote = data.subarray(0, Math.min(data.length, ICMP4_MAX - 28));
  const out = new Uint8Array(28 + quote.length);
  const dv = new DataView(out.buffer);
  out[0] = 0x45;
  out[1] = 0xc0; // internetwork control, as routers send their errors
  dv.setUint16(2, out.length);
  out[8] = 64;
  out[9] = PROTO_ICMP;
  out.set(data.subarray(16, 20), 12);
  out.set(data.subarray(12, 16), 16);
  setIpv4HeaderChecksum(out, 20);
  out[20] = 3; // Destination Unreachable
  out[21] = 4; // Fragmentation Needed and DF set
  dv.setUint16(26, Math.min(mtu, 0xffff));
  out.set(quote, 28);
  dv.setUint16(22, checksumOf(sumWords(out, 20, out.length)));
  return out;
}

/**
 * Cuts an IPv4 packet that may be fragmented (DF clear) into fragments of at most `mtu`
 * bytes (RFC 791): same header, 8-byte aligned offsets, MF on all but the last (which keeps
 * the original's MF, the packet may be a fragment already). Undefined when it cannot be done
 * here: IP options (only some are copied into fragments) or an MTU too small for 8 bytes.
 */
export function fragmentIpv4(data: Uint8Array, mtu: number): Uint8Array[] | undefined {
  const ihl = (data[0]! & 0x0f) * 4;
  if (ihl !== 20 || data.length <= mtu) return undefined;
  const total = Math.min(data.length, (data[2]! << 8) | data[3]!);
  const step = Math.floor((mtu - ihl) / 8) * 8;
  if (step < 8 || total <= ihl) return undefined;
  const flagsOffset = (data[6]! << 8) | data[7]!;
  const moreAfter = (flagsOffset & 0x2000) !== 0;
  const offset0 = flagsOffset & 0x1fff;
  const out: Uint8Array[] = [];
  for (let at = ihl; at < total; at += step) {
    const len = Math.min(step, total - at);
    const f = new Uint8Array(ihl + len);
    f.set(data.subarray(0, ihl));
    f.set(data.subarray(at, at + len), ihl);
    const last = at + len >= total;
    const field = (flagsOffset & 0x4000) | (last && !moreAfter ? 0 : 0x2000) | (offset0 + (at - ihl) / 8);
    f[2] = f.length >> 8;
    f[3] = f.length & 0xff;
    f[6] = field >> 8;
    f[7] = field & 0xff;
    setIpv4HeaderChecksum(f, ihl);
    out.push(f);
  }
  return out;
}

/** A token bucket: at most `perSecond` events a second, bursts up to the same. */
export class RateLimit {
  readonly #perSecond: number;
  #tokens: number;
  #at = performance.now();

  constructor(perSecond: number) {
    this.#perSecond = perSecond;
    this.#tokens = perSecond;
  }

  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(this.#perSecond, this.#tokens + ((now - this.#at) * this.#perSecond) / 1000);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}
