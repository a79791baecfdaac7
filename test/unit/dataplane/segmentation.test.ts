// Segmentation is checked two ways: against segments the test builds from scratch (its own
// header writer and checksum), and by tcpdump, which verifies every IP/TCP/UDP checksum of
// the segments written to a pcap file (an implementation that shares no code with ours).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { completeChecksum, segmentSuperPacket, toPlainPackets } from '../../../dataplane/segmentation.ts';
import type { Packet } from '../../../dataplane/types.ts';
import { GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, readVnetHeader } from '../../../dataplane/vnet-header.ts';

const SRC4 = [10, 1, 0, 5];
const DST4 = [10, 2, 0, 7];
const SRC6 = [0xfd, 0, 0, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
const DST6 = [0xfd, 0, 0, 0x10, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

/** RFC 1071 over a list of byte arrays concatenated (the reference; no shared code). */
function inetChecksum(...parts: ArrayLike<number>[]): number {
  const bytes = parts.flatMap((p) => Array.from(p));
  if (bytes.length % 2) bytes.push(0);
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += bytes[i]! * 256 + bytes[i + 1]!;
    sum = (sum % 65536) + Math.floor(sum / 65536);
  }
  return 65535 - sum;
}

const be16 = (v: number) => [(v >> 8) & 255, v & 255];
const be32 = (v: number) => [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];

interface Spec {
  v6: boolean;
  udp?: boolean;
  id?: number;
  seq?: number;
  flags?: number;
  payload: Uint8Array;
  /** Leave the transport checksum partial (pseudo-header sum only), as a NEEDS_CSUM sender does. */
  partial?: boolean;
}

/** Builds an IPv4/IPv6 + TCP(with a 12-byte option block)/UDP packet from scratch. */
function build(s: Spec): Uint8Array {
  const l4: number[] = s.udp
    ? [...be16(40000), ...be16(5201), ...be16(8 + s.payload.length), 0, 0]
    : [
        ...be16(40000),
        ...be16(5201),
        ...be32(s.seq ?? 0),
        ...be32(0x01020304),
        (8 << 4) | 0, // data offset 8 words: 20 + 12 option bytes (NOP NOP timestamp)
        s.flags ?? 0x10,
        ...be16(502),
        0,
        0,
        0,
        0,
        ...[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
      ];
  const proto = s.udp ? 17 : 6;
  const l4Length = l4.length + s.payload.length;
  const src = s.v6 ? SRC6 : SRC4;
  const dst = s.v6 ? DST6 : DST4;
  const pseudo = [
    ...src,
    ...dst,
    ...(s.v6 ? be32(l4Length) : [0, proto, ...be16(l4Length)]),
    ...(s.v6 ? [0, 0, 0, proto] : []),
  ];
  const csumAt = s.udp ? 6 : 16;
  if (s.partial) {
    const partial = 65535 - inetChecksum(pseudo); // folded pseudo-header sum, not complemented
    l4.splice(csumAt, 2, ...be16(partial));
  } else {
    let c = inetChecksum(pseudo, l4, s.payload);
    if (s.udp && c === 0) c = 0xffff;
    l4.splice(csumAt, 2, ...be16(c));
  }
  let ip: number[];
  if (s.v6) {
    ip = [0x60, 0, 0, 0, ...be16(l4Length), proto, 64, ...src, ...dst];
  } else {
    ip = [0x45, 0, ...be16(20 + l4Length), ...be16(s.id ?? 0), 0x40, 0, 64, proto, 0, 0, ...src, ...dst];
    ip.splice(10, 2, ...be16(inetChecksum(ip)));
  }
  return Uint8Array.from([...ip, ...l4, ...s.payload]);
}

function vnet(o: {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  start?: number;
  off?: number;
}) {
  const v = new Uint8Array(10);
  const dv = new DataView(v.buffer);
  v[0] = o.flags ?? 0;
  v[1] = o.gsoType ?? 0;
  dv.setUint16(2, o.hdrLen ?? 0, true);
  dv.setUint16(4, o.gsoSize ?? 0, true);
  dv.setUint16(6, o.start ?? 0, true);
  dv.setUint16(8, o.off ?? 0, true);
  return v;
}

function superPacket(s: Spec, mss: number): Packet {
  const ipLen = s.v6 ? 40 : 20;
  const gsoType = s.udp ? GSO_UDP_L4 : s.v6 ? GSO_TCPV6 : GSO_TCPV4;
  const hdrLen = ipLen + (s.udp ? 8 : 32);
  return {
    vnet: vnet({ flags: 1, gsoType, hdrLen, gsoSize: mss, start: ipLen, off: s.udp ? 6 : 16 }),
    data: build({ ...s, partial: true }),
  };
}

function expectedSegments(s: Spec, mss: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const n = Math.ceil(s.payload.length / mss);
  const flags = s.flags ?? 0x10;
  for (let i = 0; i < n; i++) {
    let f = flags;
    if (i < n - 1) f &= ~0x09; // FIN, PSH only on the last
    if (i > 0) f &= ~0x80; // CWR only on the first
    out.push(
      build({
        ...s,
        id: ((s.id ?? 0) + i) & 0xffff,
        seq: ((s.seq ?? 0) + i * mss) >>> 0,
        flags: f,
        payload: s.payload.subarray(i * mss, (i + 1) * mss),
      }),
    );
  }
  return out;
}

const payloadOf = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 255);

const tmp = mkdtempSync(join(tmpdir(), 'em-seg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Writes packets to a LINKTYPE_RAW pcap and returns `tcpdump -vv -r` output. */
function tcpdumpVerbose(packets: Uint8Array[]): string {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(262144, 16);
  header.writeUInt32LE(101, 20); // LINKTYPE_RAW
  const records = packets.map((p) => {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(p.length, 8);
    rec.writeUInt32LE(p.length, 12);
    return Buffer.concat([rec, p]);
  });
  const file = join(tmp, `seg-${Math.random().toString(16).slice(2)}.pcap`);
  writeFileSync(file, Buffer.concat([header, ...records]));
  return execFileSync('tcpdump', ['-nn', '-vv', '-r', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

describe('software segmentation', () => {
  for (const v6 of [false, true]) {
    it(`splits a TCPv${v6 ? 6 : 4} super-packet exactly like segments built from scratch`, () => {
      const spec: Spec = { v6, id: 0xfffe, seq: 0xffff_f000, flags: 0x80 | 0x18 | 0x01, payload: payloadOf(10_000) };
      const r = segmentSuperPacket(superPacket(spec, 1448));
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      const want = expectedSegments(spec, 1448);
      expect(r.packets.length).toBe(7); // 6 × 1448 + 1312
      expect(r.packets.map((p) => Buffer.from(p.data).toString('hex'))).toEqual(
        want.map((w) => Buffer.from(w).toString('hex')),
      );
      for (const p of r.packets) expect([...p.vnet]).toEqual(new Array(10).fill(0));
    });
  }

  it('splits a UDP (USO) super-packet into datagrams with their own length and checksum', () => {
    for (const v6 of [false, true]) {
      const spec: Spec = { v6, udp: true, id: 7, payload: payloadOf(3000) };
      const r = segmentSuperPacket(superPacket(spec, 1200));
      expect(r.ok && r.packets.map((p) => Buffer.from(p.data).toString('hex'))).toEqual(
        expectedSegments(spec, 1200).map((w) => Buffer.from(w).toString('hex')),
      );
    }
  });

  it('matches the reference for random payload sizes, MSS, sequence numbers and flags (property)', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.integer({ min: 1, max: 6000 }),
        fc.integer({ min: 100, max: 1500 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 255 }),
        (v6, size, mss, seq, id, flags) => {
          const spec: Spec = { v6, seq, id, flags, payload: payloadOf(size) };
          const r = segmentSuperPacket(superPacket(spec, mss));
          expect(r.ok && r.packets.map((p) => Buffer.from(p.data).toString('hex'))).toEqual(
            expectedSegments(spec, mss).map((w) => Buffer.from(w).toString('hex')),
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it('produces segments whose checksums tcpdump verifies as correct', () => {
    const segs = [false, true].flatMap((v6) => {
      const r = segmentSuperPacket(superPacket({ v6, seq: 1000, payload: payloadOf(4001) }, 1000));
      return r.ok ? r.packets.map((p) => p.data) : [];
    });
    const out = tcpdumpVerbose(segs);
    expect(segs.length).toBe(10);
    expect(out.match(/cksum 0x[0-9a-f]+ \(correct\)/g)?.length).toBe(10);
    expect(out).not.toMatch(/incorrect|bad cksum/); // tcpdump flags a wrong IPv4 header sum as "bad cksum"
    expect(out.match(/id (\d+),/g)).toEqual(['id 0,', 'id 1,', 'id 2,', 'id 3,', 'id 4,']);
  });

  it('completes a NEEDS_CSUM checksum of a plain packet (TCP and UDP), verified by tcpdump', () => {
    const tcp = build({ v6: false, seq: 5, payload: payloadOf(333), partial: true });
    const udp = build({ v6: true, udp: true, payload: payloadOf(77), partial: true });
    const a = completeChecksum({ vnet: vnet({ flags: 1, start: 20, off: 16 }), data: tcp });
    const b = toPlainPackets({ vnet: vnet({ flags: 1, start: 40, off: 6 }), data: udp });
    expect(a.ok && b.ok).toBe(true);
    expect(Buffer.from(tcp).toString('hex')).toBe(
      Buffer.from(build({ v6: false, seq: 5, payload: payloadOf(333) })).toString('hex'),
    );
    expect(Buffer.from(udp).toString('hex')).toBe(
      Buffer.from(build({ v6: true, udp: true, payload: payloadOf(77) })).toString('hex'),
    );
    const out = tcpdumpVerbose([tcp, udp]);
    expect(out).not.toMatch(/incorrect|bad cksum|bad udp/);
    expect(out).toMatch(/cksum 0x[0-9a-f]+ \(correct\)/);
    expect(out).toMatch(/udp sum ok/);
  });

  it('passes a plain packet through unchanged', () => {
    const p = { vnet: new Uint8Array(10), data: build({ v6: false, payload: payloadOf(10) }) };
    const r = toPlainPackets(p);
    expect(r.ok && r.packets[0]).toBe(p);
  });

  it('rejects what it cannot segment with a reason', () => {
    const good = superPacket({ v6: false, payload: payloadOf(3000) }, 1000);
    const reason = (p: Packet) => {
      const r = toPlainPackets(p);
      return r.ok ? 'ok' : r.reason;
    };
    expect(reason({ vnet: vnet({ gsoType: GSO_UDP, gsoSize: 1000 }), data: good.data })).toBe('gso-unsupported');
    expect(reason({ vnet: vnet({ gsoType: GSO_TCPV6, gsoSize: 1000 }), data: good.data })).toBe('gso-malformed');
    expect(reason({ vnet: vnet({ gsoType: GSO_TCPV4, gsoSize: 0 }), data: good.data })).toBe('gso-malformed');
    expect(reason({ vnet: good.vnet, data: good.data.subarray(0, 30) })).toBe('gso-malformed');
    expect(reason({ vnet: vnet({ flags: 1, start: 20, off: 5000 }), data: good.data })).toBe('csum-malformed');
    expect(readVnetHeader(good.vnet)).toMatchObject({ gsoType: GSO_TCPV4, gsoSize: 1000, hdrLen: 52, csumStart: 20 });
  });
});

describe('segmentation bounds: a peer cannot make one frame into millions of allocations', () => {
  const payloadOf = (n: number) => Uint8Array.from({ length: n }, (_, i) => i & 0xff);

  it('refuses gso_size below 48, a super-packet over 64 KiB, and does it before allocating', () => {
    for (const v6 of [false, true]) {
      // gso_size 1 on a full-sized super-packet: 65,000 segments before this bound.
      const tiny = segmentSuperPacket(superPacket({ v6, payload: payloadOf(65_000) }, 1));
      expect(tiny).toEqual({ ok: false, reason: 'gso-size-too-small' });
      expect(segmentSuperPacket(superPacket({ v6, payload: payloadOf(4000) }, 47))).toMatchObject({
        ok: false,
        reason: 'gso-size-too-small',
      });
      const at48 = segmentSuperPacket(superPacket({ v6, payload: payloadOf(4800) }, 48));
      expect(at48.ok && at48.packets.length).toBe(100);
      // UDP too: the peer picks the segment size of a GSO_UDP_L4 packet just the same.
      expect(segmentSuperPacket(superPacket({ v6, udp: true, payload: payloadOf(9000) }, 2))).toMatchObject({
        ok: false,
        reason: 'gso-size-too-small',
      });
    }
    // A "super-packet" of 1 MiB (the frame codec allows 4 MiB frames): refused whole.
    const huge = superPacket({ v6: false, payload: payloadOf(1 << 20) }, 1448);
    const started = performance.now();
    expect(toPlainPackets(huge)).toEqual({ ok: false, reason: 'gso-too-large' });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('still cuts the largest legitimate super-packet at the smallest legitimate size', () => {
    const r = segmentSuperPacket(superPacket({ v6: true, payload: payloadOf(65535 - 32) }, 48));
    expect(r.ok && r.packets.length).toBe(Math.ceil((65535 - 32) / 48));
  });
});
