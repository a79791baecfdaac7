// CIDR arithmetic for both families. Parsing/formatting is common/cidr.ts; the arithmetic is done
// on bigint so IPv4 and IPv6 share one code path (an IPv6 block can hold 2^48 addresses).
//
// Default node block sizes (used when the operator configures none):
// - IPv4 /24: 254 pods per node, the same default as kube-controller-manager's
//   --node-cidr-mask-size-ipv4, so a /16 cluster CIDR serves 256 nodes.
// - IPv6 /80: 2^48 addresses per node (far beyond any pod count) while a /64 cluster CIDR —
//   the smallest an operator normally hands out — still serves 65,536 nodes. A /64 per node
//   (kube-controller-manager's default) would need a /48 cluster CIDR for 65,536 nodes.
import { CidrError, formatIp, isIpAddress, parseCidr as parseCommonCidr, parseIp } from '../common/cidr.ts';
import { IpamError } from './errors.ts';
import type { IpFamily } from './types.ts';

export const DEFAULT_BLOCK_PREFIX_V4 = 24;
export const DEFAULT_BLOCK_PREFIX_V6 = 80;

/** A parsed, canonical CIDR: `network` has all host bits cleared. */
export interface Cidr {
  family: IpFamily;
  network: bigint;
  prefix: number;
}

export function familyBits(family: IpFamily): 32 | 128 {
  return family === 4 ? 32 : 128;
}

function hostMask(family: IpFamily, prefix: number): bigint {
  return (1n << BigInt(familyBits(family) - prefix)) - 1n;
}

function bytesToBigint(bytes: ArrayLike<number>): bigint {
  let n = 0n;
  for (let i = 0; i < bytes.length; i++) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

function bigintToBytes(n: bigint, length: number): number[] {
  const bytes = new Array<number>(length);
  for (let i = length - 1; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return bytes;
}

/** Parses a plain address ("10.0.0.1", "fd00::1") into family + integer, as common/cidr.ts does (after trimming). */
export function parseAddress(text: string): { family: IpFamily; value: bigint } {
  const s = text.trim();
  if (!isIpAddress(s)) throw new IpamError('InvalidAddress', `invalid IP address "${text}"`);
  const bytes = parseIp(s);
  return { family: bytes.length === 4 ? 4 : 6, value: bytesToBigint(bytes) };
}

/** Formats an integer address: dotted quad, or RFC 5952 compressed IPv6 ("fd00::1"). */
export function formatAddress(family: IpFamily, value: bigint): string {
  return formatIp(bigintToBytes(value, family === 4 ? 4 : 16));
}

/**
 * Parses "addr/prefix" (surrounding whitespace ignored) with common/cidr.ts's rules (host
 * bits cleared, as Go's net.ParseCIDR does) into the integer form the block arithmetic uses; IpamError if malformed.
 */
export function parseCidr(text: string): Cidr {
  try {
    const c = parseCommonCidr(text.trim());
    return { family: c.version, network: bytesToBigint(c.bytes), prefix: c.prefixLength };
  } catch (err) {
    if (err instanceof CidrError) throw new IpamError('InvalidCidr', err.message);
    throw err;
  }
}

function asCidr(c: Cidr | string): Cidr {
  return typeof c === 'string' ? parseCidr(c) : c;
}

export function formatCidr(c: Cidr): string {
  return `${formatAddress(c.family, c.network)}/${c.prefix}`;
}

/** "10.244.3.7/24" → "10.244.3.0/24"; "FD00:0::/64" → "fd00::/64". */
export function canonicalCidr(text: string): string {
  return formatCidr(parseCidr(text));
}

export function cidrFamily(c: Cidr | string): IpFamily {
  return asCidr(c).family;
}

/** Total number of addresses in the CIDR (2^hostbits). */
export function size(c: Cidr | string): bigint {
  const p = asCidr(c);
  return 1n << BigInt(familyBits(p.family) - p.prefix);
}

export function lastAddressValue(c: Cidr | string): bigint {
  const p = asCidr(c);
  return p.network | hostMask(p.family, p.prefix);
}

/**
 * Usable host range as integers. IPv4: network and broadcast excluded, except /31
 * (RFC 3021 point-to-point: both usable) and /32 (the single address). IPv6: only the
 * subnet-router anycast address (all host bits zero) is excluded; there is no broadcast.
 */
export function usableRange(c: Cidr | string): { first: bigint; last: bigint } {
  const p = asCidr(c);
  const last = lastAddressValue(p);
  const hostBits = familyBits(p.family) - p.prefix;
  if (hostBits === 0) return { first: p.network, last };
  if (p.family === 4) return hostBits === 1 ? { first: p.network, last } : { first: p.network + 1n, last: last - 1n };
  return { first: p.network + 1n, last };
}

export function firstUsable(c: Cidr | string): string {
  const p = asCidr(c);
  return formatAddress(p.family, usableRange(p).first);
}

export function lastUsable(c: Cidr | string): string {
  const p = asCidr(c);
  return formatAddress(p.family, usableRange(p).last);
}

/** The pods' gateway (the bridge's address): the first usable address, as host-local does. */
export function gateway(c: Cidr | string): string {
  return firstUsable(c);
}

/** True when `ip` (address string) lies inside `cidr`; false for the other family. */
export function contains(cidr: Cidr | string, ip: string): boolean {
  const p = asCidr(cidr);
  const a = parseAddress(ip);
  if (a.family !== p.family) return false;
  return (a.value & ~hostMask(p.family, p.prefix)) === p.network;
}

/** True when `inner` lies entirely inside `outer` (same family). */
export function containsCidr(outer: Cidr | string, inner: Cidr | string): boolean {
  const o = asCidr(outer);
  const i = asCidr(inner);
  if (o.family !== i.family || i.prefix < o.prefix) return false;
  return (i.network & ~hostMask(o.family, o.prefix)) === o.network;
}

/** True when the two CIDRs share at least one address. */
export function overlaps(a: Cidr | string, b: Cidr | string): boolean {
  const x = asCidr(a);
  const y = asCidr(b);
  if (x.family !== y.family) return false;
  const shorter = Math.min(x.prefix, y.prefix);
  const mask = ~hostMask(x.family, shorter);
  return (x.network & mask) === (y.network & mask);
}

function checkBlockPrefix(cluster: Cidr, blockPrefix: number): void {
  if (!Number.isInteger(blockPrefix) || blockPrefix < cluster.prefix || blockPrefix > familyBits(cluster.family)) {
    throw new IpamError(
      'InvalidBlockSize',
      `block prefix /${blockPrefix} does not fit in cluster CIDR ${formatCidr(cluster)} (must be /${cluster.prefix}../${familyBits(cluster.family)})`,
    );
  }
}

/** How many node blocks of `blockPrefix` fit in the cluster CIDR. */
export function blockCount(cluster: Cidr | string, blockPrefix: number): bigint {
  const c = asCidr(cluster);
  checkBlockPrefix(c, blockPrefix);
  return 1n << BigInt(blockPrefix - c.prefix);
}

/** The n-th (0-based) node block of `blockPrefix` inside the cluster CIDR. */
export function nthBlock(cluster: Cidr | string, blockPrefix: number, n: bigint | number): Cidr {
  const c = asCidr(cluster);
  const index = BigInt(n);
  const count = blockCount(c, blockPrefix);
  if (index < 0n || index >= count) {
    throw new IpamError(
      'InvalidBlockIndex',
      `block #${index} out of range: ${formatCidr(c)} has ${count} /${blockPrefix} blocks`,
    );
  }
  return {
    family: c.family,
    network: c.network + (index << BigInt(familyBits(c.family) - blockPrefix)),
    prefix: blockPrefix,
  };
}

/** Index of `block` inside the cluster CIDR, or undefined when it is not one of its blocks. */
export function blockIndex(cluster: Cidr | string, block: Cidr | string): bigint | undefined {
  const c = asCidr(cluster);
  const b = asCidr(block);
  if (!containsCidr(c, b)) return undefined;
  return (b.network - c.network) >> BigInt(familyBits(c.family) - b.prefix);
}

/** Splits a cluster CIDR into node blocks, lazily (an IPv6 cluster CIDR can hold 2^32 blocks). */
export function* splitBlocks(cluster: Cidr | string, blockPrefix: number): Generator<Cidr> {
  const c = asCidr(cluster);
  const count = blockCount(c, blockPrefix);
  for (let i = 0n; i < count; i++) yield nthBlock(c, blockPrefix, i);
}

export function defaultBlockPrefix(family: IpFamily): number {
  return family === 4 ? DEFAULT_BLOCK_PREFIX_V4 : DEFAULT_BLOCK_PREFIX_V6;
}
