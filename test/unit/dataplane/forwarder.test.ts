import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../common/log.ts';
import { type CaptureSink, Forwarder } from '../../../dataplane/forwarder.ts';
import { encodeFrame, FrameDecoder, FrameError } from '../../../dataplane/frame-codec.ts';
import type { Packet, PacketIO, PeerLink } from '../../../dataplane/types.ts';
import { plain, udp4, udp6 } from './packets.ts';

/** A PacketIO double: the test injects read batches and sees every write. */
class FakeTun implements PacketIO {
  readonly offload: boolean;
  handler: ((batch: Packet[]) => void) | undefined;
  writes: Packet[][] = [];
  accept = Number.POSITIVE_INFINITY;
  constructor(offload = true) {
    this.offload = offload;
  }
  onBatch(handler: (batch: Packet[]) => void): void {
    this.handler = handler;
  }
  write(batch: Packet[]): number {
    this.writes.push(batch);
    return Math.min(batch.length, this.accept);
  }
  read(batch: Packet[]): void {
    this.handler!(batch);
  }
}

class FakeLink implements PeerLink {
  frames: Uint8Array[] = [];
  full = false;
  send(frame: Uint8Array): boolean {
    if (this.full) return false;
    this.frames.push(frame);
    return true;
  }
  packets(): Packet[] {
    const d = new FrameDecoder();
    return this.frames.flatMap((f) => d.push(f));
  }
}

function setup(opts: { offload?: boolean; maxQueued?: number } = {}) {
  const tun = new FakeTun(opts.offload ?? true);
  const needed: string[] = [];
  const fwd = new Forwarder({
    tun,
    localCidrs: ['10.1.0.0/24', 'fd00:10:1::/48'],
    onPeerNeeded: (n) => needed.push(n),
    logger: silentLogger(),
    ...(opts.maxQueued !== undefined ? { maxQueuedFramesPerPeer: opts.maxQueued } : {}),
  });
  fwd.setPeer('node2', ['10.2.0.0/24', 'fd00:10:2::/48']);
  fwd.setPeer('node3', ['10.3.0.0/24']);
  return { tun, fwd, needed };
}

const hex = (p: Packet) => Buffer.from(p.data).toString('hex');

describe('Forwarder outbound', () => {
  it('sends one frame per peer per batch and drops what has no route or does not parse', () => {
    const { tun, fwd } = setup();
    const l2 = new FakeLink();
    const l3 = new FakeLink();
    fwd.attachLink('node2', l2);
    fwd.attachLink('node3', l3);
    const batch = [
      plain(udp4('10.1.0.5', '10.2.0.7')),
      plain(udp4('10.1.0.5', '10.3.0.9', 100)),
      plain(udp6(1, 5, 2, 7)),
      plain(udp4('10.1.0.5', '10.9.0.1')),
      plain(new Uint8Array([0x45, 0, 0])),
      plain(udp4('10.1.0.5', '10.2.0.8', 10)),
    ];
    tun.read(batch);
    expect(l2.frames.length).toBe(1);
    expect(l3.frames.length).toBe(1);
    expect(l2.packets().map(hex)).toEqual([batch[0]!, batch[2]!, batch[5]!].map(hex));
    expect(l3.packets().map(hex)).toEqual([hex(batch[1]!)]);
    const s = fwd.stats();
    expect(s.drops).toEqual({ 'no-route': 1, 'malformed-too-short': 1 });
    expect(s.peers['node2']).toMatchObject({ txPackets: 3, txBytes: 60 + 80 + 38 });
    expect(s.peers['node3']).toMatchObject({ txPackets: 1, txBytes: 128 });
  });

  it('holds a few frames for a peer without a link, asks for it once, and flushes them in order on attach', () => {
    const { tun, fwd, needed } = setup({ maxQueued: 2 });
    for (let i = 0; i < 4; i++) tun.read([plain(udp4('10.1.0.5', '10.2.0.7', i + 1))]);
    expect(needed).toEqual(['node2']); // rate-limited: once per second per peer
    expect(fwd.stats().drops).toEqual({ 'no-link': 2 });
    const link = new FakeLink();
    fwd.attachLink('node2', link);
    expect(link.packets().map((p) => p.data.length)).toEqual([29, 30]);
    expect(fwd.stats().peers['node2']).toMatchObject({ txPackets: 2, drops: 2 });
  });

  it('bounds held bytes across all peers, and drops held frames that went stale', async () => {
    const tun = new FakeTun();
    const fwd = new Forwarder({ tun, localCidrs: [], maxHeldBytes: 200, maxHoldMs: 50, logger: silentLogger() });
    fwd.setPeer('n2', ['10.2.0.0/16']);
    fwd.setPeer('n3', ['10.3.0.0/16']);
    tun.read([plain(udp4('10.1.0.5', '10.2.0.7', 60))]); // frame of 12 + 6 + 10 + 88 = 116 bytes: held
    tun.read([plain(udp4('10.1.0.5', '10.3.0.7', 60))]); // another 116 would exceed 200 in all: dropped
    expect(fwd.stats().drops).toEqual({ 'no-link': 1 });
    const late = new FakeLink();
    await new Promise((r) => setTimeout(r, 80));
    fwd.attachLink('n2', late);
    expect(late.frames.length).toBe(0); // stale: dropped instead of sent
    expect(fwd.stats().drops).toEqual({ 'no-link': 2 });
    tun.read([plain(udp4('10.1.0.5', '10.3.0.7', 60))]); // the budget was given back
    fwd.attachLink('n3', late);
    expect(late.frames.length).toBe(1);
  });

  it('keeps a link that comes before the peer is set: it carries nothing until its CIDRs are routed', () => {
    const tun = new FakeTun();
    const needed: string[] = [];
    const fwd = new Forwarder({ tun, localCidrs: ['10.1.0.0/24'], logger: silentLogger() });
    fwd.onPeerNeeded((n) => needed.push(n)); // the overlay subscribes after the forwarder exists
    const link = new FakeLink();
    fwd.attachLink('early', link);
    fwd.receive('early', encodeFrame([plain(udp4('10.7.0.5', '10.1.0.5'))]));
    expect(tun.writes).toEqual([]);
    expect(fwd.stats().drops).toEqual({ 'spoofed-source': 1 }); // no CIDRs of its own yet
    tun.read([plain(udp4('10.1.0.5', '10.7.0.9'))]);
    expect(fwd.stats().drops['no-route']).toBe(1);
    fwd.setPeer('early', ['10.7.0.0/24']);
    tun.read([plain(udp4('10.1.0.5', '10.7.0.9'))]);
    expect(link.packets().length).toBe(1); // the same link, no new connect asked for
    expect(needed).toEqual([]);
    fwd.receive('early', encodeFrame([plain(udp4('10.7.0.5', '10.1.0.5'))]));
    expect(tun.writes.length).toBe(1);
    fwd.setPeer('other', ['10.8.0.0/24']);
    tun.read([plain(udp4('10.1.0.5', '10.8.0.9'))]);
    expect(needed).toEqual(['other']);
  });

  it('counts frames refused by a full link', () => {
    const { tun, fwd } = setup();
    const link = new FakeLink();
    link.full = true;
    fwd.attachLink('node2', link);
    tun.read([plain(udp4('10.1.0.5', '10.2.0.7')), plain(udp4('10.1.0.5', '10.2.0.8'))]);
    expect(fwd.stats().drops).toEqual({ 'link-full': 2 });
  });

  it('splits a batch into several frames when it would exceed maxFrameBytes', () => {
    const tun = new FakeTun();
    const fwd = new Forwarder({ tun, localCidrs: [], maxFrameBytes: 3000, logger: silentLogger() });
    fwd.setPeer('n', ['10.2.0.0/16']);
    const link = new FakeLink();
    fwd.attachLink('n', link);
    tun.read(Array.from({ length: 5 }, () => plain(udp4('10.1.0.5', '10.2.0.7', 1000))));
    expect(link.frames.length).toBe(3);
    expect(link.frames.every((f) => f.length <= 3000)).toBe(true);
    expect(link.packets().length).toBe(5);
  });

  it('follows route updates at once: new CIDRs, removed peers', () => {
    const { tun, fwd } = setup();
    const l2 = new FakeLink();
    fwd.attachLink('node2', l2);
    fwd.setPeer('node2', ['10.2.0.0/24', '10.20.0.0/16']);
    tun.read([plain(udp4('10.1.0.5', '10.20.3.3'))]);
    expect(l2.frames.length).toBe(1);
    fwd.setPeer('node2', ['10.20.0.0/16']);
    tun.read([plain(udp4('10.1.0.5', '10.2.0.7'))]);
    fwd.removePeer('node2');
    tun.read([plain(udp4('10.1.0.5', '10.20.3.3'))]);
    expect(l2.frames.length).toBe(1);
    expect(fwd.stats().drops).toEqual({ 'no-route': 2 });
    expect(() => fwd.setPeer('bad', ['10.0.0.0/40'])).toThrow(/invalid CIDR/);
  });
});

describe('Forwarder: bounded work per received frame', () => {
  it('drops and counts a packet larger than any IP datagram; hands a super-packet to the TUN whole', () => {
    const { tun, fwd } = setup({ offload: false });
    const packet = udp4('10.2.0.7', '10.1.0.5', 60_000);
    const vnet = new Uint8Array(10);
    vnet[1] = 5; // GSO_UDP_L4
    vnet[2] = 28; // hdr_len
    vnet[4] = 1; // gso_size 1: the TUN refuses it (test/unit/dataplane/tun-offloads.test.ts)
    fwd.receive('node2', encodeFrame([{ vnet, data: packet }]));
    const oversize = udp4('10.2.0.7', '10.1.0.5', 200_000);
    fwd.receive('node2', encodeFrame([{ vnet: new Uint8Array(10), data: oversize }]));
    expect(tun.writes.map((w) => w.map((p) => p.data.length))).toEqual([[60_028]]);
    expect(fwd.stats().drops).toEqual({ 'too-large': 1 });
  });
});

describe("Forwarder: a peer cannot take over another peer's addresses", () => {
  it("refuses a CIDR equal to, inside or around another peer's, or overlapping this node's own", () => {
    const { tun, fwd } = setup();
    const l2 = new FakeLink();
    const evil = new FakeLink();
    fwd.attachLink('node2', l2);
    // The same block (last writer used to win), a /32 inside it (longest prefix used to win),
    // a /8 around it, and this node's own block: none of them is routed to the intruder.
    fwd.setPeer('evil', []);
    fwd.attachLink('evil', evil);
    const refused = fwd.setPeer('evil', ['10.2.0.0/24', '10.2.0.7/32', '10.0.0.0/8', '10.1.0.0/24', '10.66.0.0/24']);
    expect(refused).toEqual(['10.2.0.0/24', '10.2.0.7/32', '10.0.0.0/8', '10.1.0.0/24']);
    expect(fwd.stats().refusedCidrs).toEqual({ evil: ['10.2.0.0/24', '10.2.0.7/32', '10.0.0.0/8', '10.1.0.0/24'] });
    tun.read([plain(udp4('10.1.0.5', '10.2.0.7')), plain(udp4('10.1.0.5', '10.66.0.1'))]);
    expect(l2.frames.length).toBe(1);
    expect(evil.packets().length).toBe(1); // only its own, uncontested block
    // Its packets claiming node2's addresses as source are spoofed.
    fwd.receive('evil', encodeFrame([plain(udp4('10.2.0.7', '10.1.0.5'))]));
    expect(fwd.stats().drops['spoofed-source']).toBe(1);
    // The holder keeps its block when it is set again; once it leaves, the block is free.
    expect(fwd.setPeer('node2', ['10.2.0.0/24'])).toEqual([]);
    fwd.removePeer('node2');
    expect(fwd.setPeer('evil', ['10.2.0.0/24'])).toEqual([]);
    expect(fwd.stats().refusedCidrs).toEqual({});
  });
});

describe('Forwarder inbound', () => {
  it('writes packets that pass policy in one TUN write, drops spoofed, transit and malformed ones', () => {
    const { tun, fwd } = setup();
    const good4 = plain(udp4('10.2.0.7', '10.1.0.5'));
    const good6 = plain(udp6(2, 7, 1, 5));
    const frame = encodeFrame([
      good4,
      plain(udp4('10.3.0.9', '10.1.0.5')), // node3's address arriving from node2
      plain(udp4('10.2.0.7', '10.2.0.8')), // transit: not ours
      plain(udp4('10.2.0.7', '10.1.0.5').subarray(0, 27)), // truncated
      good6,
      { vnet: new Uint8Array(3), data: udp4('10.2.0.7', '10.1.0.5') },
    ]);
    fwd.receive('node2', frame.subarray(0, 50));
    expect(tun.writes.length).toBe(0);
    fwd.receive('node2', frame.subarray(50));
    expect(tun.writes.length).toBe(1);
    expect(tun.writes[0]!.map(hex)).toEqual([hex(good4), hex(good6)]);
    const s = fwd.stats();
    expect(s.drops).toEqual({
      'spoofed-source': 1,
      'not-local-destination': 1,
      'malformed-truncated': 1,
      'bad-vnet-header': 1,
    });
    expect(s.peers['node2']).toMatchObject({ rxPackets: 2, rxBytes: 60 + 80, drops: 4 });
  });

  it('counts a garbled stream, rethrows FrameError, and accepts a fresh stream afterwards', () => {
    const { tun, fwd } = setup();
    const frame = encodeFrame([plain(udp4('10.2.0.7', '10.1.0.5'))]);
    fwd.receive('node2', frame.subarray(0, 20));
    const garbled = frame.slice();
    garbled[0] = 0;
    expect(() => fwd.receive('node2', garbled)).toThrow(FrameError);
    expect(fwd.stats().drops['bad-frame']).toBe(1);
    fwd.receive('node2', frame); // the stream was reset: a new one starts at a frame boundary
    expect(tun.writes.length).toBe(1);
    fwd.receive('unknown', frame);
    expect(fwd.stats().drops['unknown-peer']).toBe(1);
  });

  it('counts packets the TUN refused', () => {
    const { tun, fwd } = setup();
    tun.accept = 1;
    fwd.receive('node2', encodeFrame([plain(udp4('10.2.0.7', '10.1.0.5')), plain(udp4('10.2.0.7', '10.1.0.6'))]));
    expect(fwd.stats().drops).toEqual({ 'tun-write': 1 });
  });

  it('hands a super-packet to the TUN as it is, whatever the TUN offloads', () => {
    const { tun, fwd } = setup({ offload: false });
    const data = udp4('10.2.0.7', '10.1.0.5', 3000);
    const vnet = new Uint8Array(10);
    vnet[0] = 1; // NEEDS_CSUM
    vnet[1] = 5; // GSO_UDP_L4
    vnet[4] = 0xe8; // gso_size 1000
    vnet[5] = 0x03;
    fwd.receive('node2', encodeFrame([{ vnet, data }]));
    expect(tun.writes[0]!.map((p) => [p.vnet[1], p.data.length])).toEqual([[5, 3028]]);
    expect(fwd.stats().peers['node2']).toMatchObject({ rxPackets: 1, rxBytes: 3028 });
  });
});

describe('Forwarder capture', () => {
  it('offers forwarded packets in both directions, and survives a failing capture', () => {
    const { tun, fwd } = setup();
    const seen: string[] = [];
    const capture: CaptureSink = { offer: (p, m) => seen.push(`${m.direction}:${m.peer}:${p.data.length}`) };
    fwd.addCapture(capture);
    fwd.addCapture({
      offer: () => {
        throw new Error('disk full');
      },
    });
    fwd.attachLink('node2', new FakeLink());
    tun.read([plain(udp4('10.1.0.5', '10.2.0.7'))]);
    fwd.receive('node2', encodeFrame([plain(udp4('10.2.0.7', '10.1.0.5', 1))]));
    expect(seen).toEqual(['tx:node2:60', 'rx:node2:29']);
    fwd.removeCapture(capture);
    tun.read([plain(udp4('10.1.0.5', '10.2.0.7'))]);
    expect(seen.length).toBe(2);
    expect(tun.writes.length).toBe(1);
  });
});
