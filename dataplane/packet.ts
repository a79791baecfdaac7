// Zero-copy view of an IPv4/IPv6 packet's header: just what routing and policy need
// (version, addresses, protocol, lengths), validated strictly so a malformed packet is
// rejected with a reason the forwarder can count instead of confusing a later stage.

/** Why a buffer is not an acceptable IP packet (used as the drop counter's label). */
export type PacketRejectReason =
  | 'too-short'
  | 'bad-version'
  | 'bad-header-length'
  | 'bad-total-length'
  | 'truncated'
  | 'bad-header-checksum';

export interface PacketHeader {
  ok: true;
  version: 4 | 6;
  /** IP header length in bytes (IPv4: IHL*4; IPv6: the fixed 40-byte header). */
  headerLength: number;
  /** Length of the IP packet in bytes as the header (or, for a GSO jumbo, the buffer) says. */
  totalLength: number;
  /** IPv4 protocol or IPv6 next header. */
  protocol: number;
  /** Source and destination address bytes: views into the packet, not copies. */
  srcBytes: Uint8Array;
  dstBytes: Uint8Array;
  /** IPv4 addresses as unsigned 32-bit integers (0 for IPv6): the fast LPM key. */
  src4: number;
  dst4: number;
}

export interface PacketRejected {
  ok: false;
  reason: PacketRejectReason;
}

export type ParseResult = PacketHeader | PacketRejected;

export interface ParseOptions {
  /**
   * The packet is a GSO super-packet (its vnet header has a gso_type). The kernel then may
   * hand over a length field of 0 when the packet exceeds 64 KiB (BIG TCP: IPv4 tot_len 0,
   * IPv6 payload_len 0 with a jumbo option); the real length is the buffer's.
   */
  gso?: boolean;
}

const IPV4_MIN_HEADER = 20;
const IPV6_HEADER = 40;

function reject(reason: PacketRejectReason): PacketRejected {
  return { ok: false, reason };
}

/** Validates and describes the IP header at the start of `data` without copying it. */
export function parsePacket(data: Uint8Array, options: ParseOptions = {}): ParseResult {
  if (data.length < 1) return reject('too-short');
  const version = data[0]! >> 4;
  if (version === 4) return parseIpv4(data, options.gso === true);
  if (version === 6) return parseIpv6(data, options.gso === true);
  return reject('bad-version');
}

function parseIpv4(data: Uint8Array, gso: boolean): ParseResult {
  if (data.length < IPV4_MIN_HEADER) return reject('too-short');
  const headerLength = (data[0]! & 0x0f) * 4;
  if (headerLength < IPV4_MIN_HEADER || headerLength > data.length) return reject('bad-header-length');
  let totalLength = (data[2]! << 8) | data[3]!;
  if (totalLength === 0 && gso && data.length > 0xffff) {
    totalLength = data.length; // BIG TCP super-packet: tot_len 0 means "the whole buffer"
  } else if (totalLength > data.length) {
    return reject('truncated');
  } else if (totalLength < headerLength || totalLength < data.length) {
    // Shorter than its header, or trailing bytes the header does not account for: a TUN
    // never hands those over, so a peer that sends one is broken or probing.
    return reject('bad-total-length');
  }
  if (ipv4HeaderChecksum(data, headerLength) !== 0) return reject('bad-header-checksum');
  return {
    ok: true,
    version: 4,
    headerLength,
    totalLength,
    protocol: data[9]!,
    srcBytes: data.subarray(12, 16),
    dstBytes: data.subarray(16, 20),
    src4: ((data[12]! << 24) | (data[13]! << 16) | (data[14]! << 8) | data[15]!) >>> 0,
    dst4: ((data[16]! << 24) | (data[17]! << 16) | (data[18]! << 8) | data[19]!) >>> 0,
  };
}

function parseIpv6(data: Uint8Array, gso: boolean): ParseResult {
  if (data.length < IPV6_HEADER) return reject('too-short');
  const payloadLength = (data[4]! << 8) | data[5]!;
  let totalLength = IPV6_HEADER + payloadLength;
  if (payloadLength === 0 && gso && data.length > 0xffff + IPV6_HEADER) {
    totalLength = data.length; // jumbo super-packet (BIG TCP over IPv6)
  } else if (totalLength > data.length) {
    return reject('truncated');
  } else if (totalLength < data.length) {
    return reject('bad-total-length');
  }
  return {
    ok: true,
    version: 6,
    headerLength: IPV6_HEADER,
    totalLength,
    protocol: data[6]!,
    srcBytes: data.subarray(8, 24),
    dstBytes: data.subarray(24, 40),
    src4: 0,
    dst4: 0,
  };
}

/** Ones'-complement sum over the IPv4 header; 0 when the stored checksum is right. */
function ipv4HeaderChecksum(data: Uint8Array, headerLength: number): number {
  let sum = 0;
  for (let i = 0; i < headerLength; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Text form of address bytes (4 → dotted quad, 16 → RFC 5952 compressed IPv6). */
export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== 16) throw new RangeError(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i]! << 8) | bytes[i + 1]!);
  // RFC 5952: compress the longest run (≥ 2) of zero words, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Source address as text (for logs, capture filters and policy messages; not the hot path). */
export function sourceAddress(header: PacketHeader): string {
  return formatAddress(header.srcBytes);
}

/** Destination address as text. */
export function destinationAddress(header: PacketHeader): string {
  return formatAddress(header.dstBytes);
}
