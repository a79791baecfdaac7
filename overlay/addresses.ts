// Address classification from our own rules, not libp2p's: libp2p's isPrivate() counts the
// TEST-NET ranges (the lab's "internet") as private, and path choice must not depend on it.
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import ipaddr from 'ipaddr.js';

const NON_PUBLIC_RANGES = new Set([
  'unspecified',
  'broadcast',
  'multicast',
  'linkLocal',
  'loopback',
  'carrierGradeNat',
  'private',
  'uniqueLocal',
  'ipv4Mapped',
]);

/** True for an IP a host on the internet could route to (TEST-NET included, on purpose). */
export function isPublicIp(ip: string): boolean {
  if (!ipaddr.isValid(ip)) return false;
  return !NON_PUBLIC_RANGES.has(ipaddr.parse(ip).range());
}

/** The IP of a /ip4 or /ip6 multiaddr, or undefined (dns, unix, ...). */
export function ipOf(ma: Multiaddr): string | undefined {
  const first = ma.getComponents()[0];
  if (first === undefined) return undefined;
  return first.name === 'ip4' || first.name === 'ip6' ? first.value : undefined;
}

/** The TCP port of a multiaddr, or undefined. */
export function tcpPortOf(ma: Multiaddr): number | undefined {
  const tcp = ma.getComponents().find((c) => c.name === 'tcp');
  return tcp?.value === undefined ? undefined : Number(tcp.value);
}

export function isCircuit(ma: Multiaddr): boolean {
  return ma.getComponents().some((c) => c.name === 'p2p-circuit');
}

export function withPeer(ma: Multiaddr, peerId: string): Multiaddr {
  return ma.getComponents().some((c) => c.name === 'p2p') ? ma : ma.encapsulate(`/p2p/${peerId}`);
}

/** The multiaddr of `target` reached through `relayAddr` (a relay's public address). */
export function circuitAddr(relayAddr: Multiaddr, relayPeerId: string, target: string): Multiaddr {
  return multiaddr(`${withPeer(relayAddr, relayPeerId).toString()}/p2p-circuit/p2p/${target}`);
}

export function ipPortToMultiaddr(ip: string, port: number): Multiaddr {
  return multiaddr(`/${ipaddr.parse(ip).kind() === 'ipv6' ? 'ip6' : 'ip4'}/${ip}/tcp/${port}`);
}
