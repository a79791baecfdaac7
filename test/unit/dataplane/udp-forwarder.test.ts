// The forwarder's hooks for UDP session links: packets handed over without a frame codec,
// the path MTU check answering too-big DF packets with ICMP into the TUN, and
// receivePackets() applying the inbound policy.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../common/log.ts';
import { checksumOf, pseudoHeaderSum, setIpv4HeaderChecksum, sumWords } from '../../../dataplane/checksum.ts';
import { Forwarder } from '../../../dataplane/forwarder.ts';
import type { Packet, PacketIO, PeerLink } from '../../../dataplane/types.ts';
import { plain, udp4, udp6 } from './packets.ts';
import { superPacket } from './udp-packets.ts';

class FakeTun implements PacketIO {
  readonly offload = true;
  handler: ((batch: Packet[]) => void) | undefined;
  writes: Packet[] = [];
  onBatch(handler: (batch: Packet[]) => void): void {
    this.handler = handler;
  }
  write(batch: Packet[]): number {
    this.writes.push(...batch);
    return batch.length;
  }
  read(batch: Packet[]): void {
    this.handler!(batch);
  }
}

class FakePacketLink implements PeerLink {
  sent: Packet[] = [];
  frames = 0;
  accept = Number.POSITIVE_INFINITY;
  readonly mtu: number | undefined;
  constructor(mtu?: number) {
    this.mtu = mtu;
  }
  send(): boolean {
    this.frames++;
    return true;
  }
  sendPackets(packets: Packet[]): number {
    const n = Math.min(packets.length, this.accept);
    this.sent.push(...packets.slice(0, n));
    return n;
  }
}

function setup(opts: { icmpPerSecond?: number; tunnelMtu?: number } = {}) {
  const tun = new FakeTun();
  const fwd = new Forwarder({
    tun,
    localCidrs: ['10.1.0.0/24', 'fd00:10:1::/48'],
    logger: silentLogger(),
    ...opts,
  });
  fwd.setPeer('node2', ['10.2.0.0/24', 'fd00:10:2::/48']);
  return { tun, fwd };
}

function withDf(p: Uint8Array): Uint8Array {
  p[6] = 0x40;
  setIpv4HeaderChecksum(p, 20);
  return p;
}

describe('Forwarder with a packet link (UDP session)', () => {
  it('hands packets over as they are, no frame, and counts what the link refused', () => {
    const { tun, fwd } = setup();
    const link = new FakePacketLink(1420);
    fwd.attachLink('node2', link);
    const batch = [plain(udp4('10.1.0.5', '10.2.0.7', 100)), plain(udp6(1, 5, 2, 7, 200))];
    tun.read(batch);
    expect(link.sent).toEqual(batch);
    expect(link.frames).toBe(0);
    link.accept = 1;
    tun.read(batch);
    const s = fwd.stats();
    expect(s.peers['node2']).toMatchObject({ txPackets: 3, drops: 1 });
    expect(s.drops).toEqual({ 'link-full': 1 });
  });

  it('answers a DF IPv4 packet above the link MTU with ICMP Fragmentation Needed into the TUN', () => {
    const { tun, fwd } = setup();
    const link = new FakePacketLink(1200);
    fwd.attachLink('node2', link);
    const big = withDf(udp4('10.1.0.5', '10.2.0.7', 1400 - 28));
    const small = plain(udp4('10.1.0.5', '10.2.0.7', 100));
    tun.read([plain(big), small]);
    expect(link.sent).toEqual([small]);
    expect(tun.writes).toHaveLength(1);
    const icmp = tun.writes[0]!.data;
    expect(icmp[9]).toBe(1);
    expect([...icmp.subarray(12, 16)]).toEqual([10, 2, 0, 7]); // from the destination
    expect([...icmp.subarray(16, 20)]).toEqual([10, 1, 0, 5]); // to the sender
    expect(checksumOf(sumWords(icmp, 0, 20))).toBe(0);
    expect([icmp[20], icmp[21]]).toEqual([3, 4]);
    expect((icmp[26]! << 8) | icmp[27]!).toBe(1200);
    expect(checksumOf(sumWords(icmp, 20, icmp.length))).toBe(0);
    expect(icmp.subarray(28, 48)).toEqual(big.subarray(0, 20)); // quotes the original header
    expect(icmp.length).toBeLessThanOrEqual(576);
    expect(fwd.stats()).toMatchObject({ icmpTooBig: 1, drops: { 'too-big': 1 } });
  });

  it('answers an IPv6 packet above the MTU with ICMPv6 Packet Too Big (never below 1280)', () => {
    const { tun, fwd } = setup({ tunnelMtu: 1300 });
    const link = new FakePacketLink(); // no mtu of its own: the forwarder's tunnelMtu applies
    fwd.attachLink('node2', link);
    const big = udp6(1, 5, 2, 7, 1400);
    tun.read([plain(big)]);
    expect(link.sent).toEqual([]);
    const icmp = tun.writes[0]!.data;
    expect(icmp[6]).toBe(58);
    expect(icmp.subarray(8, 24)).toEqual(big.subarray(24, 40));
    expect(icmp.subarray(24, 40)).toEqual(big.subarray(8, 24));
    expect(icmp[40]).toBe(2);
    expect(new DataView(icmp.buffer).getUint32(44)).toBe(1300);
    const pseudo = pseudoHeaderSum(icmp.subarray(8, 24), icmp.subarray(24, 40), 58, icmp.length - 40);
    expect(checksumOf(sumWords(icmp, 40, icmp.length, pseudo))).toBe(0);
    expect(icmp.length).toBeLessThanOrEqual(1280);
  });

  it('checks a GSO super-packet by its segment size, not its total size', () => {
    const { tun, fwd } = setup();
    fwd.setPeer('node2', ['10.202.0.0/24']); // where superPacket() sends to
    const link = new FakePacketLink(1400);
    fwd.attachLink('node2', link);
    const fits = superPacket({ v6: false, payload: 30_000, mss: 1348 }); // 20 + 32 + 1348 = 1400
    const tooBig = superPacket({ v6: false, payload: 30_000, mss: 1349 });
    tun.read([fits, tooBig]);
    expect(link.sent).toEqual([fits]);
    expect(tun.writes).toHaveLength(1);
    expect((tun.writes[0]!.data[26]! << 8) | tun.writes[0]!.data[27]!).toBe(1400);
  });

  it('drops fragmentable IPv4 packets that are too big without ICMP, and never answers ICMP errors', () => {
    const { tun, fwd } = setup();
    fwd.attachLink('node2', new FakePacketLink(1200));
    const noDf = udp4('10.1.0.5', '10.2.0.7', 1400);
    const icmpError = withDf(udp4('10.1.0.5', '10.2.0.7', 1400));
    icmpError[9] = 1;
    icmpError[20] = 3;
    setIpv4HeaderChecksum(icmpError, 20);
    tun.read([plain(noDf), plain(icmpError)]);
    expect(tun.writes).toEqual([]);
    expect(fwd.stats().drops).toEqual({ 'too-big-fragmentable': 1, 'too-big': 1 });
  });

  it('rate-limits the ICMP errors', () => {
    const { tun, fwd } = setup({ icmpPerSecond: 2 });
    fwd.attachLink('node2', new FakePacketLink(1200));
    tun.read(Array.from({ length: 5 }, () => plain(withDf(udp4('10.1.0.5', '10.2.0.7', 1400)))));
    expect(tun.writes).toHaveLength(2);
    expect(fwd.stats()).toMatchObject({ icmpTooBig: 2, drops: { 'too-big': 5, 'icmp-rate-limited': 3 } });
  });

  it('sends frames held before the link came through sendPackets', () => {
    const { tun, fwd } = setup();
    const batch = [plain(udp4('10.1.0.5', '10.2.0.7', 100)), plain(udp6(1, 5, 2, 7, 50))];
    tun.read(batch);
    const link = new FakePacketLink(1420);
    fwd.attachLink('node2', link);
    expect(link.sent.map((p) => p.data)).toEqual(batch.map((p) => p.data));
    expect(fwd.stats().peers['node2']!.txPackets).toBe(2);
  });
});

describe('Forwarder.receivePackets', () => {
  it('applies the inbound policy (source of that peer, local destination) and writes the rest in one batch', () => {
    const { tun, fwd } = setup();
    const good = plain(udp4('10.2.0.7', '10.1.0.5', 100));
    const good6 = plain(udp6(2, 7, 1, 5, 100));
    fwd.receivePackets('node2', [
      good,
      plain(udp4('10.3.0.7', '10.1.0.5')), // not node2's source
      plain(udp4('10.2.0.7', '10.9.0.5')), // not our destination
      plain(new Uint8Array([0x45, 0])), // garbage
      good6,
    ]);
    fwd.receivePackets('node9', [good]);
    expect(tun.writes).toEqual([good, good6]);
    const s = fwd.stats();
    expect(s.peers['node2']).toMatchObject({ rxPackets: 2, drops: 3 });
    expect(s.drops).toMatchObject({ 'spoofed-source': 1, 'not-local-destination': 1, 'unknown-peer': 1 });
  });
});
