// What TunDevice.write does before the kernel sees a packet: anything the device cannot
// offload is cut in software, so callers (the forwarder) hand any packet to the TUN. The
// real device is covered by test/integration/dataplane/forwarder-no-offload.test.ts.
import { describe, expect, it } from 'vitest';
import { packetsForTun } from '../../../dataplane/tun-device.ts';
import type { Packet } from '../../../dataplane/types.ts';
import { GSO_TCPV4, GSO_UDP_L4 } from '../../../dataplane/vnet-header.ts';
import { plain, udp4, udp6 } from './packets.ts';

/** A UDP super-packet: one UDP header, `payload` bytes to cut at 1000 (NEEDS_CSUM, as a sender's kernel makes it). */
function udpSuperPacket(data: Uint8Array): Packet {
  const vnet = new Uint8Array(10);
  const v = new DataView(vnet.buffer);
  const ipLen = data[0]! >> 4 === 6 ? 40 : 20;
  vnet[0] = 1;
  vnet[1] = GSO_UDP_L4;
  v.setUint16(2, ipLen + 8, true);
  v.setUint16(4, 1000, true);
  v.setUint16(6, ipLen, true);
  v.setUint16(8, 6, true);
  return { vnet, data };
}

const lengths = (r: ReturnType<typeof packetsForTun>) => (r.ok ? r.packets.map((p) => p.data.length) : r.reason);
const ALL = ['csum', 'tso4', 'tso6', 'uso4', 'uso6'];

describe('packetsForTun: what a TUN write sends to the kernel', () => {
  it('cuts a super-packet for a TUN without offloads, and leaves no vnet offload on the segments', () => {
    const r = packetsForTun(udpSuperPacket(udp4('10.2.0.7', '10.1.0.5', 3000)), false, []);
    expect(lengths(r)).toEqual([1028, 1028, 1028]);
    expect(r.ok && r.packets.every((p) => p.vnet.every((b) => b === 0))).toBe(true);
  });

  it('cuts the GSO kinds an offloading TUN lacks (USO before Linux 6.2), per IP version', () => {
    const v4 = udpSuperPacket(udp4('10.2.0.7', '10.1.0.5', 3000));
    const v6 = udpSuperPacket(udp6(2, 7, 1, 5, 3000));
    expect(lengths(packetsForTun(v4, true, ['csum', 'tso4', 'tso6']))).toEqual([1028, 1028, 1028]);
    expect(lengths(packetsForTun(v4, true, ALL))).toEqual([3028]);
    expect(lengths(packetsForTun(v6, true, ['csum', 'tso4', 'tso6', 'uso4']))).toEqual([1048, 1048, 1048]);
    expect(lengths(packetsForTun(v6, true, ALL))).toEqual([3048]);
  });

  it('passes what the device takes untouched (same object), plain packets always', () => {
    const p = plain(udp4('10.2.0.7', '10.1.0.5', 100));
    const r = packetsForTun(p, false, []);
    expect(r.ok && r.packets[0]).toBe(p);
    const tso: Packet = { vnet: new Uint8Array(10), data: new Uint8Array(3040) };
    tso.vnet[1] = GSO_TCPV4;
    const whole = packetsForTun(tso, true, ['tso4']);
    expect(whole.ok && whole.packets[0]).toBe(tso);
  });

  it('completes a partial checksum for a TUN without offloads, leaves it to an offloading one', () => {
    const p = udpSuperPacket(udp4('10.2.0.7', '10.1.0.5', 500)); // 500 bytes: fits one segment
    p.vnet[1] = 0; // a plain packet, checksum partial
    const before = p.data.slice();
    expect(lengths(packetsForTun({ vnet: p.vnet, data: before.slice() }, true, ALL))).toEqual([528]);
    const r = packetsForTun(p, false, []);
    expect(lengths(r)).toEqual([528]);
    expect(r.ok && r.packets[0]!.vnet[0]).toBe(0);
    expect(Buffer.from(p.data.subarray(26, 28)).equals(Buffer.from(before.subarray(26, 28)))).toBe(false);
  });

  it('refuses, with a reason, a super-packet whose cutting a peer made hostile', () => {
    const p = udpSuperPacket(udp4('10.2.0.7', '10.1.0.5', 60_000));
    p.vnet[4] = 1; // gso_size 1: 60,000 segments
    p.vnet[5] = 0;
    expect(lengths(packetsForTun(p, false, []))).toBe('gso-size-too-small');
    expect(lengths(packetsForTun(p, true, ['tso4']))).toBe('gso-size-too-small');
  });
});
