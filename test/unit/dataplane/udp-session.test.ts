// The native UDP session engine over loopback: sealing round trips, control messages, the
// replay window, and every kind of hostile datagram dropped and counted in C; plus the C
// segmentation checked against dataplane/segmentation.ts for the same super-packets.
import { createCipheriv, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { readdirSync } from 'node:fs';
import fc from 'fast-check';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { toPlainPackets } from '../../../dataplane/segmentation.ts';
import type { Packet } from '../../../dataplane/types.ts';
import {
  cryptoBench,
  segmentNative,
  UdpDataSocket,
  type UdpDataSocketOptions,
  type UdpEndpoint,
} from '../../../dataplane/udp-session.ts';
import { superPacket } from './udp-packets.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface Received {
  index: number;
  data: Uint8Array[];
  from: UdpEndpoint;
}

const opened: UdpDataSocket[] = [];
const raws: dgram.Socket[] = [];
afterEach(() => {
  for (const s of opened.splice(0)) s.close();
  for (const r of raws.splice(0)) r.close();
});

/** The receive mode the sockets of the current describe block use. */
let receiver: 'thread' | 'loop' | 'auto' = 'thread';

function openSocket(bind: string, extra: Partial<UdpDataSocketOptions> = {}) {
  const packets: Received[] = [];
  const control: Received[] = [];
  const sock = UdpDataSocket.open({
    bind,
    port: 0,
    onPackets: (index, batch, from) => packets.push({ index, data: batch.map((p) => p.data.slice()), from }),
    onControl: (index, message, from) => control.push({ index, data: [message.slice()], from }),
    receiver,
    ...extra,
  });
  opened.push(sock);
  return { sock, packets, control, count: () => packets.reduce((n, r) => n + r.data.length, 0) };
}

/** Two sockets with one session each way: A's index 11 ↔ B's index 22. */
function pair(bind = '127.0.0.1', extra: Partial<UdpDataSocketOptions> = {}) {
  const a = openSocket(bind, extra);
  const b = openSocket(bind, extra);
  const kAB = randomBytes(32);
  const kBA = randomBytes(32);
  const host = bind === '::' || bind === '::1' ? '::1' : '127.0.0.1';
  a.sock.addSession({ localIndex: 11, remoteIndex: 22, txKey: kAB, rxKey: kBA }, { ip: host, port: b.sock.port });
  b.sock.addSession({ localIndex: 22, remoteIndex: 11, txKey: kBA, rxKey: kAB }, { ip: host, port: a.sock.port });
  return { a, b, kAB, kBA, host };
}

const plain = (data: Uint8Array): Packet => ({ vnet: new Uint8Array(10), data });
const payload = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

/** A raw socket that records what arrives, so tests can replay and mangle real datagrams. */
async function sniffer(type: 'udp4' | 'udp6' = 'udp4') {
  const raw = dgram.createSocket(type);
  raws.push(raw);
  const got: Buffer[] = [];
  raw.on('message', (m) => got.push(m));
  await new Promise<void>((r) => raw.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', r));
  return { raw, got, port: raw.address().port };
}

function sendRaw(raw: dgram.Socket, msg: Uint8Array, port: number, host = '127.0.0.1'): Promise<void> {
  return new Promise((resolve, reject) => raw.send(msg, port, host, (err) => (err ? reject(err) : resolve())));
}

describe.each(['thread', 'loop', 'auto'] as const)('UdpDataSocket sealing round trip (%s receiver)', (mode) => {
  beforeAll(() => {
    receiver = mode;
  });

  it('carries a batch of packets A → B and B → A, with the sender endpoint and session index', async () => {
    const { a, b } = pair();
    const batch = [plain(payload(60, 1)), plain(payload(1400, 2)), plain(payload(1, 3))];
    expect(a.sock.send(11, batch)).toBe(3);
    await until('B receives 3', () => b.count() === 3);
    expect(b.packets.flatMap((r) => r.data)).toEqual(batch.map((p) => p.data));
    expect(b.packets[0]!.index).toBe(22);
    expect(b.packets[0]!.from).toEqual({ ip: '127.0.0.1', port: a.sock.port });
    expect(b.sock.send(22, [plain(payload(100, 9))])).toBe(1);
    await until('A receives 1', () => a.count() === 1);
    expect(a.packets[0]!.data[0]).toEqual(payload(100, 9));
    expect(a.sock.session(11)!.txCounter).toBe(3n);
    expect(b.sock.session(22)!.rxPackets).toBe(3);
    expect(b.sock.session(22)!.lastRxAgeMs).toBeGreaterThanOrEqual(0);
    expect(a.sock.stats().txDatagrams).toBe(3);
    expect(b.sock.stats().drops).toEqual({});
  });

  it('works on an IPv6 dual-stack socket and reports IPv6 senders', async () => {
    const { a, b } = pair('::');
    expect(a.sock.send(11, [plain(payload(500, 4))])).toBe(1);
    await until('B receives', () => b.count() === 1);
    expect(b.packets[0]!.from).toEqual({ ip: '::1', port: a.sock.port });
  });

  it('sends a large batch (more datagrams than one UDP_SEGMENT message) without loss on loopback', async () => {
    const { a, b } = pair();
    const batch = Array.from({ length: 300 }, (_, i) => plain(payload(1200, i)));
    expect(a.sock.send(11, batch)).toBe(300);
    await until('B receives 300', () => b.count() === 300);
    expect(b.packets.flatMap((r) => r.data)).toEqual(batch.map((p) => p.data));
    expect(b.sock.stats().rxBatches).toBeLessThan(300); // batched, not one call per datagram
  });

  it('delivers control messages to onControl, to the session endpoint or an explicit candidate', async () => {
    const { a, b } = pair();
    const c = openSocket('127.0.0.1');
    c.sock.addSession({ localIndex: 22, remoteIndex: 11, txKey: randomBytes(32), rxKey: randomBytes(32) });
    expect(a.sock.sendControl(11, Uint8Array.of(1, 2, 3))).toBe(true);
    await until('B control', () => b.control.length === 1);
    expect(b.control[0]).toEqual({
      index: 22,
      data: [Uint8Array.of(1, 2, 3)],
      from: { ip: '127.0.0.1', port: a.sock.port },
    });
    expect(b.packets).toEqual([]);
    // to an explicit candidate (C has index 22 but other keys: it cannot open it)
    expect(a.sock.sendControl(11, Uint8Array.of(4), { ip: '127.0.0.1', port: c.sock.port })).toBe(true);
    await until('C counts auth failure', () => (c.sock.stats().drops['auth-failed'] ?? 0) === 1);
    expect(c.control).toEqual([]);
    expect(() => a.sock.sendControl(11, new Uint8Array(1201))).toThrow(/EINVAL/);
  });

  it('survives close() called from inside its own onPackets callback', async () => {
    const { a, b } = pair();
    let calls = 0;
    const c = UdpDataSocket.open({
      bind: '127.0.0.1',
      port: 0,
      receiver: mode,
      onPackets: () => {
        calls++;
        c.close();
      },
      onControl() {},
    });
    opened.push(c);
    const k = randomBytes(32);
    c.addSession({ localIndex: 5, remoteIndex: 6, txKey: k, rxKey: k });
    a.sock.addSession({ localIndex: 6, remoteIndex: 5, txKey: k, rxKey: k }, { ip: '127.0.0.1', port: c.port });
    a.sock.send(
      6,
      Array.from({ length: 50 }, (_, i) => plain(payload(100, i))),
    );
    await until('callback ran', () => calls > 0);
    await sleep(100);
    expect(calls).toBe(1);
    expect(c.closed).toBe(true);
    // the others keep working
    a.sock.send(11, [plain(payload(10, 1))]);
    await until('B still receives', () => b.count() === 1);
  });

  it('moves a session to a new endpoint with setEndpoint', async () => {
    const { a, b } = pair();
    const s = await sniffer();
    a.sock.setEndpoint(11, { ip: '127.0.0.1', port: s.port });
    a.sock.send(11, [plain(payload(80, 1))]);
    await until('sniffer gets it', () => s.got.length === 1);
    expect(s.got[0]!.length).toBe(80 + 32);
    expect(s.got[0]![0]).toBe(4);
    expect(s.got[0]!.readUInt32LE(4)).toBe(22); // the receiver's index
    expect(s.got[0]!.readBigUInt64LE(8)).toBe(0n);
    expect(b.count()).toBe(0);
  });

  it('counts sends without a session or endpoint, oversize packets and the counter limit', () => {
    const a = openSocket('127.0.0.1', { mtu: 1280, counterLimit: 5 });
    expect(a.sock.send(99, [plain(payload(10, 0))])).toBe(0);
    a.sock.addSession({ localIndex: 1, remoteIndex: 2, txKey: randomBytes(32), rxKey: randomBytes(32) });
    expect(a.sock.send(1, [plain(payload(10, 0))])).toBe(0);
    a.sock.setEndpoint(1, { ip: '127.0.0.1', port: 9 }); // discard port on loopback: nobody reads
    expect(a.sock.send(1, [plain(payload(1281, 0)), plain(payload(1280, 0))])).toBe(1);
    expect(
      a.sock.send(
        1,
        Array.from({ length: 8 }, () => plain(payload(20, 0))),
      ),
    ).toBe(4);
    expect(a.sock.session(1)!.txCounter).toBe(5n);
    expect(a.sock.stats().drops).toMatchObject({ 'no-session': 1, 'no-endpoint': 1, oversize: 1, 'counter-limit': 4 });
  });

  it('refuses bad arguments with clear errors', () => {
    const a = openSocket('127.0.0.1');
    const k = randomBytes(32);
    expect(() => a.sock.addSession({ localIndex: -1, remoteIndex: 1, txKey: k, rxKey: k })).toThrow(/u32/);
    expect(() => a.sock.addSession({ localIndex: 1, remoteIndex: 1, txKey: k.subarray(0, 16), rxKey: k })).toThrow(
      /32-byte/,
    );
    a.sock.addSession({ localIndex: 1, remoteIndex: 1, txKey: k, rxKey: k });
    expect(() => a.sock.addSession({ localIndex: 1, remoteIndex: 2, txKey: k, rxKey: k })).toThrow(/EEXIST/);
    expect(() => a.sock.setEndpoint(1, { ip: 'nope', port: 1 })).toThrow(/address/);
    expect(() => a.sock.setEndpoint(1, { ip: '::1', port: 1 })).toThrow(/EINVAL/); // IPv4 socket
    expect(() => a.sock.setEndpoint(7, { ip: '127.0.0.1', port: 1 })).toThrow(/ENOENT/);
    expect(() => UdpDataSocket.open({ bind: 'x', port: 0, onPackets() {}, onControl() {} })).toThrow(/bind/);
    a.sock.close();
    expect(() => a.sock.send(1, [])).toThrow(/EBADF/);
    expect(a.sock.session(1)).toBeUndefined();
    expect(a.sock.stats()).toMatchObject({ sessions: 0, txDatagrams: 0 });
    a.sock.close(); // idempotent
  });
});

/** The documented wire format, sealed by node:crypto: an implementation that shares nothing with the addon. */
function sealDatagram(key: Uint8Array, receiver: number, counter: bigint, body: Uint8Array, type = 4): Buffer {
  const header = Buffer.alloc(16);
  header[0] = type;
  header.writeUInt32LE(receiver, 4);
  header.writeBigUInt64LE(counter, 8);
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(counter, 4);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(header);
  return Buffer.concat([header, c.update(body), c.final(), c.getAuthTag()]);
}

describe('lifecycle', () => {
  it('leaks no fd or thread over open/close cycles with every receiver, also after traffic', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const threads = () => readdirSync('/proc/self/task').length;
    const warm = UdpDataSocket.open({ bind: '127.0.0.1', port: 0, onPackets() {}, onControl() {}, receiver: 'auto' });
    warm.close();
    const fd0 = fds();
    const th0 = threads();
    let handoffs = 0;
    for (const mode of ['thread', 'loop', 'auto'] as const) {
      receiver = mode;
      for (let i = 0; i < 10; i++) {
        const { a, b } = pair();
        // Enough in one go that 'auto' hands receiving to its thread before the close.
        expect(
          a.sock.send(
            11,
            Array.from({ length: 64 }, (_, k) => plain(payload(200, k))),
          ),
        ).toBe(64);
        await until('B receives 64', () => b.count() === 64);
        handoffs += b.sock.stats().receiverHandoffs;
        for (const s of opened.splice(0)) s.close();
      }
    }
    expect(handoffs).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 50)); // uv_close of the poll handles completes on the loop
    expect(fds()).toBe(fd0);
    expect(threads()).toBe(th0);
  });
});

describe('wire format', () => {
  beforeAll(() => {
    receiver = 'thread';
  });

  it('opens datagrams sealed by another implementation of the documented format, data and control', async () => {
    const { b, kAB } = pair();
    const s = await sniffer();
    await sendRaw(s.raw, sealDatagram(kAB, 22, 7n, payload(300, 5)), b.sock.port);
    await sendRaw(s.raw, sealDatagram(kAB, 22, 8n, Uint8Array.of(9, 9), 5), b.sock.port);
    await until('both arrive', () => b.count() === 1 && b.control.length === 1);
    expect(b.packets[0]!.data[0]).toEqual(payload(300, 5));
    expect(b.packets[0]!.from).toEqual({ ip: '127.0.0.1', port: s.port });
    expect(b.control[0]!.data[0]).toEqual(Uint8Array.of(9, 9));
  });

  it('seals what another implementation opens: header, nonce from the counter, header as AAD', async () => {
    const { a, kAB } = pair();
    const s = await sniffer();
    a.sock.setEndpoint(11, { ip: '127.0.0.1', port: s.port });
    a.sock.send(11, [plain(payload(123, 1)), plain(payload(50, 2))]);
    await until('2 captured', () => s.got.length === 2);
    const expected = [sealDatagram(kAB, 22, 0n, payload(123, 1)), sealDatagram(kAB, 22, 1n, payload(50, 2))];
    expect(s.got).toEqual(expected);
  });
});

describe.each(['thread', 'loop', 'auto'] as const)(
  'UdpDataSocket receive checks, %s receiver (hostile datagrams never reach JS)',
  (mode) => {
    beforeAll(() => {
      receiver = mode;
    });

    it('drops replayed, forged, truncated, stale-key, unknown-index and random datagrams, counting each', async () => {
      const { a, b } = pair();
      const s = await sniffer();
      a.sock.setEndpoint(11, { ip: '127.0.0.1', port: s.port });
      a.sock.send(11, [plain(payload(100, 1)), plain(payload(100, 2)), plain(payload(100, 3))]);
      await until('captured 3', () => s.got.length === 3);
      const [d0, d1, d2] = s.got as [Buffer, Buffer, Buffer];
      // first delivery: accepted, out of order too
      await sendRaw(s.raw, d1, b.sock.port);
      await sendRaw(s.raw, d0, b.sock.port);
      await until('B got 2', () => b.count() === 2);
      // replays
      await sendRaw(s.raw, d1, b.sock.port);
      await sendRaw(s.raw, d0, b.sock.port);
      // forged: one ciphertext bit, the header (counter) and the type flipped
      const flipped = Buffer.from(d2);
      flipped[40]! ^= 1;
      await sendRaw(s.raw, flipped, b.sock.port);
      const counter = Buffer.from(d2);
      counter[8]! ^= 0x80;
      await sendRaw(s.raw, counter, b.sock.port);
      const type = Buffer.from(d2);
      type[0] = 5;
      await sendRaw(s.raw, type, b.sock.port);
      // truncated: below the header + tag, and cut inside the ciphertext
      await sendRaw(s.raw, d2.subarray(0, 20), b.sock.port);
      await sendRaw(s.raw, d2.subarray(0, d2.length - 1), b.sock.port);
      // unknown index, bad type, random bytes
      const unknown = Buffer.from(d2);
      unknown.writeUInt32LE(12345, 4);
      await sendRaw(s.raw, unknown, b.sock.port);
      const badType = Buffer.from(d2);
      badType[0] = 1;
      await sendRaw(s.raw, badType, b.sock.port);
      for (let i = 0; i < 50; i++) await sendRaw(s.raw, randomBytes(1 + ((i * 37) % 1500)), b.sock.port);
      // the untouched one still opens after all that
      await sendRaw(s.raw, d2, b.sock.port);
      await until('B got 3', () => b.count() === 3);
      const drops = b.sock.stats().drops;
      expect(drops['replay']).toBe(2);
      expect(drops['auth-failed']).toBeGreaterThanOrEqual(4); // ciphertext, counter, type, cut
      expect(drops['short']).toBeGreaterThanOrEqual(1);
      expect(drops['unknown-index']).toBeGreaterThanOrEqual(1);
      expect(drops['bad-type']).toBeGreaterThanOrEqual(1);
      const total = Object.values(drops).reduce((x, y) => x + y, 0);
      expect(total).toBe(2 + 3 + 2 + 2 + 50); // every bad datagram counted exactly once
      expect(b.packets.flatMap((r) => r.data)).toEqual([payload(100, 2), payload(100, 1), payload(100, 3)]);
      // stale key: after the session is replaced, its datagrams no longer open
      b.sock.removeSession(22);
      b.sock.addSession({ localIndex: 22, remoteIndex: 11, txKey: randomBytes(32), rxKey: randomBytes(32) });
      a.sock.send(11, [plain(payload(100, 4))]);
      await until('captured 4', () => s.got.length === 4);
      await sendRaw(s.raw, s.got[3]!, b.sock.port);
      await until('stale key counted', () => (b.sock.stats().drops['auth-failed'] ?? 0) === drops['auth-failed']! + 1);
      b.sock.removeSession(22);
      await sendRaw(s.raw, s.got[3]!, b.sock.port);
      await until(
        'removed index counted',
        () => (b.sock.stats().drops['unknown-index'] ?? 0) === drops['unknown-index']! + 1,
      );
      expect(b.count()).toBe(3);
    });

    it('keeps a 2048-bit sliding window: late datagrams inside it open once, older ones are refused', async () => {
      const { a, b } = pair();
      const s = await sniffer();
      a.sock.setEndpoint(11, { ip: '127.0.0.1', port: s.port });
      const n = 2200;
      // 100 at a time: the sniffer's receive buffer is small without root
      for (let i = 0; i < n; i += 100) {
        a.sock.send(
          11,
          Array.from({ length: 100 }, (_, j) => plain(payload(20, i + j))),
        );
        await until(`captured ${i + 100}`, () => s.got.length === i + 100);
      }
      const byCounter = new Map(s.got.map((d) => [Number(d.readBigUInt64LE(8)), d]));
      // newest first, then counters 2100..2199 in reverse (inside the window), then 0 and 100 (outside)
      await sendRaw(s.raw, byCounter.get(n - 1)!, b.sock.port);
      for (let c = n - 2; c >= n - 100; c--) await sendRaw(s.raw, byCounter.get(c)!, b.sock.port);
      await sendRaw(s.raw, byCounter.get(0)!, b.sock.port);
      await sendRaw(s.raw, byCounter.get(100)!, b.sock.port);
      await sendRaw(s.raw, byCounter.get(n - 50)!, b.sock.port); // a replay inside the window
      await until('B got 100', () => b.count() === 100);
      await until('3 refused', () => (b.sock.stats().drops['replay'] ?? 0) === 3);
      expect(b.count()).toBe(100);
    }, 60_000);

    it('survives a flood of random datagrams and keeps working', async () => {
      const { a, b } = pair();
      const s = await sniffer();
      for (let i = 0; i < 2000; i++) {
        const junk = randomBytes(1 + (i % 200));
        if (i % 2 && junk.length >= 4) {
          junk[0] = 4; // look like data for the real session
          junk.fill(0, 1, 4);
          if (junk.length >= 8) junk.writeUInt32LE(22, 4);
        }
        s.raw.send(junk, b.sock.port, '127.0.0.1');
      }
      // loopback may drop some of a burst: the count only has to grow well past the real traffic
      await until('flood counted', () => b.sock.stats().rxDatagrams >= 200, 20_000);
      a.sock.send(11, [plain(payload(64, 1))]);
      await until('real packet still opens', () => b.count() === 1);
    });
  },
);

describe('native segmentation matches dataplane/segmentation.ts', () => {
  const specs = fc.record({
    v6: fc.boolean(),
    udp: fc.boolean(),
    payload: fc.integer({ min: 1, max: 64_000 }),
    mss: fc.integer({ min: 64, max: 9000 }),
    seq: fc.integer({ min: 0, max: 0xffffffff }),
    id: fc.integer({ min: 0, max: 0xffff }),
    tcpFlags: fc.integer({ min: 0, max: 0xff }),
    options: fc.constantFrom(0, 12, 40),
  });

  it('produces byte-identical segments for random TCP/UDP v4/v6 super-packets and partial checksums', () => {
    fc.assert(
      fc.property(specs, (s) => {
        const p = superPacket(s);
        const native = segmentNative(p);
        const ts = toPlainPackets({ vnet: p.vnet, data: p.data.slice() });
        expect(ts.ok).toBe(true);
        if (!ts.ok) return;
        expect(native).toEqual(ts.packets.map((x) => x.data));
      }),
      { numRuns: 200 },
    );
  });

  it('refuses malformed super-packets as the TypeScript path does', () => {
    const p = superPacket({ v6: false, payload: 3000, mss: 1000 });
    const wrongVersion = { vnet: p.vnet, data: p.data.slice() };
    wrongVersion.data[0] = 0x65;
    expect(segmentNative(wrongVersion)).toBe('gso-malformed');
    const ufo = { vnet: p.vnet.slice(), data: p.data };
    ufo.vnet[1] = 3;
    expect(segmentNative(ufo)).toBe('gso-unsupported');
    const short = { vnet: p.vnet, data: p.data.subarray(0, 30) };
    expect(segmentNative(short)).toBe('gso-malformed');
  });

  it('segments a super-packet on send: B receives exactly the segments segmentation.ts makes', async () => {
    const { a, b } = pair('127.0.0.1', { coalesce: false });
    const p = superPacket({ v6: true, payload: 20_000, mss: 1300 }); // 1372-byte segments: below the 1420 default MTU
    const expected = toPlainPackets({ vnet: p.vnet, data: p.data.slice() });
    expect(expected.ok).toBe(true);
    if (!expected.ok) return;
    expect(a.sock.send(11, [p])).toBe(1);
    await until('segments arrive', () => b.count() === expected.packets.length);
    expect(b.packets.flatMap((r) => r.data)).toEqual(expected.packets.map((x) => x.data));
    // equal-size runs went out as UDP_SEGMENT messages (or one by one where refused)
    expect(a.sock.stats().txDatagrams).toBe(expected.packets.length);
  });
});

describe('receive-side coalescing (GRO)', () => {
  /** Opens a pair whose receiver keeps vnet headers, so coalesced super-packets can be checked. */
  function groPair() {
    const a = openSocket('127.0.0.1');
    const got: Packet[] = [];
    const b = UdpDataSocket.open({
      bind: '127.0.0.1',
      port: 0,
      onPackets: (_i, batch) => {
        for (const p of batch) got.push({ vnet: p.vnet.slice(), data: p.data.slice() });
      },
      onControl() {},
    });
    opened.push(b);
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    a.sock.addSession({ localIndex: 1, remoteIndex: 2, txKey: k1, rxKey: k2 }, { ip: '127.0.0.1', port: b.port });
    b.addSession({ localIndex: 2, remoteIndex: 1, txKey: k2, rxKey: k1 });
    return { a: a.sock, b, got };
  }

  for (const v6 of [false, true]) {
    it(`merges the segments of a TCP/IPv${v6 ? 6 : 4} super-packet back into one that segments to the same packets`, async () => {
      const { a, b, got } = groPair();
      const p = superPacket({ v6, payload: 30_000, mss: 1200, id: 0xfff0 });
      const segments = toPlainPackets({ vnet: p.vnet, data: p.data.slice() });
      if (!segments.ok) throw new Error('bad test packet');
      expect(a.send(1, [p])).toBe(1);
      await until('data arrives', () => got.reduce((n, x) => n + x.data.length, 0) >= 30_000);
      // everything that arrived in one receive batch is one super-packet; resegmenting gives the originals
      expect(got.length).toBeLessThan(segments.packets.length);
      expect(b.stats().rxCoalesced).toBe(segments.packets.length - got.length);
      const again = got.flatMap((x) => {
        const r = toPlainPackets(x);
        if (!r.ok) throw new Error(r.reason);
        return r.packets.map((s) => s.data);
      });
      expect(again).toEqual(segments.packets.map((s) => s.data));
      expect(got[0]!.vnet[1]).toBe(v6 ? 4 : 1);
    });
  }

  it('does not merge across flows, gaps, or other flags', async () => {
    const { a, got } = groPair();
    const one = superPacket({ v6: false, payload: 2400, mss: 1200, seq: 1000, tcpFlags: 0x10 });
    const gap = superPacket({ v6: false, payload: 1200, mss: 1200, seq: 1000 + 2400 + 1, tcpFlags: 0x10 });
    const syn = superPacket({ v6: false, payload: 1200, mss: 1200, seq: 1000 + 2400 + 1 + 1200, tcpFlags: 0x12 });
    const udp = superPacket({ v6: false, udp: true, payload: 1200, mss: 1200 });
    expect(a.send(1, [one, gap, syn, udp])).toBe(4);
    await until('5 packets', () => got.length >= 4);
    await sleep(100);
    // one and its second segment merge; the gap, the SYN and the UDP packet stay apart
    expect(got.map((x) => x.data.length)).toEqual([20 + 32 + 2400, 20 + 32 + 1200, 20 + 32 + 1200, 20 + 8 + 1200]);
  });
});

describe('crypto figures', () => {
  it('measures seal/open ns per byte for both AEADs with the Node binary OpenSSL', () => {
    for (const c of ['aes-256-gcm', 'chacha20-poly1305'] as const) {
      const r = cryptoBench(c, 1400, 2000);
      expect(r.sealNsPerByte).toBeGreaterThan(0);
      expect(r.sealNsPerByte).toBeLessThan(100);
    }
  });
});
