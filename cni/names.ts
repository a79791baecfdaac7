// Deterministic names and MAC addresses, so that every operation on an attachment (ADD,
// a repeated ADD, DEL after an agent restart, GC) finds the same host interface again
// without any state beyond the lease.
import { createHash } from 'node:crypto';

/** Host-side veth names start with this; GC recognises its own interfaces by it. */
export const HOST_VETH_PREFIX = 'emv';

function digest(...parts: string[]): Buffer {
  return createHash('sha256').update(parts.join('\0')).digest();
}

/** "emv" + 12 hex digits = 15 characters, the kernel's limit (IFNAMSIZ - 1). */
export function hostVethName(containerId: string, ifname: string): string {
  return HOST_VETH_PREFIX + digest(containerId, ifname).subarray(0, 6).toString('hex');
}

/** Exactly the names hostVethName makes: "emv" + 12 lowercase hex digits. */
export function isHostVethName(name: string): boolean {
  return /^emv[0-9a-f]{12}$/.test(name);
}

function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A locally administered unicast MAC derived from `parts` (first octet 0x02). */
export function derivedMac(...parts: string[]): string {
  const d = digest(...parts);
  return formatMac(Uint8Array.of(0x02, d[0]!, d[1]!, d[2]!, d[3]!, d[4]!));
}

/**
 * The pod interface's MAC: 0a:58 + the IPv4 address (the convention of kubenet and OVN),
 * unique on the bridge because the IP is; hash-derived when the pod has no IPv4.
 */
export function podMac(ipv4: string | undefined, containerId: string, ifname: string): string {
  if (!ipv4) return derivedMac('pod', containerId, ifname);
  return formatMac(Uint8Array.of(0x0a, 0x58, ...ipv4.split('.').map(Number)));
}
