// Internet checksum (RFC 1071) helpers for software segmentation and checksum completion.
// Sums are kept unfolded in a JS number (exact up to 2^53, far beyond 64 KiB of words)
// and folded once at the end.

/** Unfolded ones'-complement sum of the 16-bit big-endian words of data[start, end). */
export function sumWords(data: Uint8Array, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  const even = end - ((end - start) & 1);
  for (; i < even; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (i < end) sum += data[i]! << 8; // odd length: pad with a zero byte
  return sum;
}

/** Folds an unfolded sum to 16 bits (end-around carry). */
export function foldSum(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The checksum field value for an unfolded sum: the complement of the folded sum. */
export function checksumOf(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/**
 * Unfolded sum of the TCP/UDP pseudo-header: source and destination address (4 or 16
 * bytes each), protocol and the transport length (header + payload).
 */
export function pseudoHeaderSum(src: Uint8Array, dst: Uint8Array, protocol: number, transportLength: number): number {
  let sum = sumWords(src, 0, src.length) + sumWords(dst, 0, dst.length) + protocol;
  sum += Math.floor(transportLength / 0x10000) + (transportLength & 0xffff); // IPv6 jumbo: 32-bit length
  return sum;
}

/** Recomputes and stores the IPv4 header checksum of the header at data[0, headerLength). */
export function setIpv4HeaderChecksum(data: Uint8Array, headerLength: number): void {
  data[10] = 0;
  data[11] = 0;
  const c = checksumOf(sumWords(data, 0, headerLength));
  data[10] = c >> 8;
  data[11] = c & 0xff;
}
