// Test packet builders for the dataplane unit tests (IPv4/IPv6 UDP with valid headers).
import type { Packet } from '../../../dataplane/types.ts';

function ipv4Checksum(h: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += (h[i]! << 8) | h[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An IPv4 UDP packet from `src` to `dst` (dotted quads) with `payload` bytes. */
export function udp4(src: string, dst: string, payload = 32): Uint8Array {
  const p = new Uint8Array(28 + payload);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, p.length);
  p[8] = 64;
  p[9] = 17;
  p.set(src.split('.').map(Number), 12);
  p.set(dst.split('.').map(Number), 16);
  dv.setUint16(10, ipv4Checksum(p.subarray(0, 20)));
  dv.setUint16(20, 40000);
  dv.setUint16(22, 5201);
  dv.setUint16(24, 8 + payload);
  return p;
}

/** An IPv6 UDP packet; src/dst as 16 bytes with only the last byte and a /48 prefix varied. */
export function udp6(srcSite: number, srcHost: number, dstSite: number, dstHost: number, payload = 32): Uint8Array {
  const p = new Uint8Array(48 + payload);
  const dv = new DataView(p.buffer);
  p[0] = 0x60;
  dv.setUint16(4, 8 + payload);
  p[6] = 17;
  p[7] = 64;
  p.set([0xfd, 0, 0, 0x10, 0, srcSite], 8);
  p[23] = srcHost;
  p.set([0xfd, 0, 0, 0x10, 0, dstSite], 24);
  p[39] = dstHost;
  return p;
}

export function plain(data: Uint8Array): Packet {
  return { vnet: new Uint8Array(10), data };
}
