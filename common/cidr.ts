// The one IP/CIDR vocabulary of the project (ipaddr.js underneath), strict by design:
// addresses and CIDRs come from other nodes (annotations, IPAMBlocks, offers), and
// ipaddr.js alone accepts legacy forms ("10.1", "0xa.0.0.1", "167772161/8") that no
// Kubernetes component writes. dataplane/ (route table, forwarder), ipam/ (block
// arithmetic), agent/ and overlay/ all parse here, so they agree on what is valid.
import ipaddr from 'ipaddr.js';

export class CidrError extends Error {
  constructor(text: string, why: string) {
    super(`invalid CIDR "${text}": ${why}`);
    this.name = 'CidrError';
  }
}

/** A CIDR parsed to its canonical form: network bytes with host bits cleared. */
export interface ParsedCidr {
  version: 4 | 6;
  bytes: Uint8Array;
  prefixLength: number;
  /** Canonical text, e.g. "10.1.0.0/16", "fd00::/64". */
  text: string;
}

/**
 * Whether `text` is an IP address in a form a node may publish: a dotted-quad IPv4 or an
 * IPv6 address without a zone.
 */
export function isIpAddress(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return true;
  return text.includes(':') && !text.includes('%') && ipaddr.IPv6.isValid(text);
}

/** Address text (see isIpAddress) → its 4 or 16 bytes; throws CidrError for anything else. */
export function parseIp(text: string): Uint8Array {
  if (!isIpAddress(text)) throw new CidrError(String(text), 'not an IP address');
  return Uint8Array.from(ipaddr.parse(text).toByteArray());
}

/** Address bytes (4 or 16) → canonical text ("10.0.0.1", RFC 5952 "fd00::1"). */
export function formatIp(bytes: ArrayLike<number>): string {
  if (bytes.length !== 4 && bytes.length !== 16) throw new CidrError(String(bytes), 'need 4 or 16 bytes');
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}

/**
 * Parses "address/prefix" (the address as isIpAddress wants it, the prefix 0–32 or 0–128
 * in decimal). Host bits set ("10.244.3.7/24") are cleared, as Go's net.ParseCIDR does;
 * callers that must refuse a non-canonical text compare it with `.text` (isCanonicalCidr).
 */
export function parseCidr(text: string): ParsedCidr {
  if (typeof text !== 'string') throw new CidrError(String(text), 'not address/prefix');
  const slash = text.indexOf('/');
  if (slash < 0) throw new CidrError(text, 'missing "/prefix"');
  const prefixText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) throw new CidrError(text, 'bad prefix length');
  const address = text.slice(0, slash);
  if (!isIpAddress(address)) throw new CidrError(text, 'bad address');
  const bytes = Uint8Array.from(ipaddr.parse(address).toByteArray());
  const version = bytes.length === 4 ? 4 : 6;
  const prefixLength = Number(prefixText);
  if (prefixLength > bytes.length * 8) throw new CidrError(text, `prefix /${prefixLength} longer than the address`);
  for (let bit = prefixLength; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { version, bytes, prefixLength, text: `${formatIp(bytes)}/${prefixLength}` };
}

/** Whether `text` is a CIDR exactly in its canonical form (what a node may publish). */
export function isCanonicalCidr(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  try {
    return parseCidr(text).text === text;
  } catch {
    return false;
  }
}
