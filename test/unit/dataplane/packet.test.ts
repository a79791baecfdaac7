import { describe, expect, it } from 'vitest';
import { destinationAddress, formatAddress, parsePacket, sourceAddress } from '../../../dataplane/packet.ts';

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) + (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

function ipv4(opts: { src?: number[]; dst?: number[]; payload?: number; ihl?: number; totalLength?: number }) {
  const ihl = opts.ihl ?? 5;
  const payload = opts.payload ?? 8;
  const p = new Uint8Array(ihl * 4 + payload);
  const view = new DataView(p.buffer);
  p[0] = 0x40 | ihl;
  view.setUint16(2, opts.totalLength ?? p.length);
  p[8] = 64;
  p[9] = 17;
  p.set(opts.src ?? [10, 1, 0, 5], 12);
  p.set(opts.dst ?? [10, 2, 0, 7], 16);
  view.setUint16(10, checksum(p.subarray(0, ihl * 4)));
  return p;
}

function ipv6(payload = 8, payloadLength = payload) {
  const p = new Uint8Array(40 + payload);
  p[0] = 0x60;
  new DataView(p.buffer).setUint16(4, payloadLength);
  p[6] = 6;
  p[7] = 64;
  p.set([0xfd, 0, 0, 0x10, 0, 1], 8);
  p[23] = 5;
  p.set([0xfd, 0, 0, 0x10, 0, 2], 24);
  p[39] = 7;
  return p;
}

describe('parsePacket', () => {
  it('reads an IPv4 header: addresses as text, bytes and integers, protocol and lengths', () => {
    const r = parsePacket(ipv4({ src: [10, 1, 0, 5], dst: [192, 168, 200, 7] }));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r).toMatchObject({ version: 4, headerLength: 20, totalLength: 28, protocol: 17 });
    expect(sourceAddress(r)).toBe('10.1.0.5');
    expect(destinationAddress(r)).toBe('192.168.200.7');
    expect(r.dst4).toBe(0xc0a8c807);
    expect(r.src4).toBe(0x0a010005);
    expect([...r.dstBytes]).toEqual([192, 168, 200, 7]);
  });

  it('accepts IPv4 options and reads the header length from IHL', () => {
    const r = parsePacket(ipv4({ ihl: 6 }));
    expect(r.ok && r.headerLength).toBe(24);
  });

  it('reads an IPv6 header', () => {
    const r = parsePacket(ipv6());
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r).toMatchObject({ version: 6, headerLength: 40, totalLength: 48, protocol: 6, src4: 0, dst4: 0 });
    expect(sourceAddress(r)).toBe('fd00:10:1::5');
    expect(destinationAddress(r)).toBe('fd00:10:2::7');
  });

  it('rejects malformed packets with a reason', () => {
    const bad = (data: Uint8Array) => {
      const r = parsePacket(data);
      return r.ok ? 'accepted' : r.reason;
    };
    expect(bad(new Uint8Array(0))).toBe('too-short');
    expect(bad(ipv4({}).subarray(0, 19))).toBe('too-short');
    expect(bad(ipv6().subarray(0, 39))).toBe('too-short');
    const v5 = ipv4({});
    v5[0] = 0x55;
    expect(bad(v5)).toBe('bad-version');
    expect(bad(ipv4({ ihl: 4 }))).toBe('bad-header-length');
    const longIhl = ipv4({ payload: 0 });
    longIhl[0] = 0x4f; // 60-byte header in a 20-byte buffer
    expect(bad(longIhl)).toBe('bad-header-length');
    expect(bad(ipv4({ totalLength: 12 }))).toBe('bad-total-length');
    expect(bad(ipv4({ totalLength: 29 }))).toBe('truncated');
    const corrupt = ipv4({});
    corrupt[15]! ^= 1; // address changed after the checksum was computed
    expect(bad(corrupt)).toBe('bad-header-checksum');
    expect(bad(ipv6(8, 9))).toBe('truncated');
    expect(bad(ipv4({ totalLength: 27 }))).toBe('bad-total-length'); // a trailing byte
    expect(bad(ipv6(8, 7))).toBe('bad-total-length');
  });

  it('accepts IPv4 total length 0 only for a GSO super-packet beyond 64 KiB (BIG TCP)', () => {
    const jumbo = ipv4({ payload: 70_000, totalLength: 0 });
    expect(parsePacket(jumbo).ok).toBe(false);
    const r = parsePacket(jumbo, { gso: true });
    expect(r.ok && r.totalLength).toBe(70_020);
    expect(parsePacket(ipv4({ payload: 100, totalLength: 0 }), { gso: true }).ok).toBe(false);
    const v6jumbo = ipv6(70_000, 0);
    expect(parsePacket(v6jumbo).ok).toBe(false);
    expect(parsePacket(v6jumbo, { gso: true }).ok).toBe(true);
  });

  it('accepts a TSO super-packet whose total length covers the whole buffer (64 KiB)', () => {
    const r = parsePacket(ipv4({ payload: 65_535 - 20 }), { gso: true });
    expect(r.ok && r.totalLength).toBe(65_535);
  });

  it('formats addresses per RFC 5952', () => {
    expect(formatAddress(new Uint8Array(16))).toBe('::');
    const a = new Uint8Array(16);
    a[15] = 1;
    expect(formatAddress(a)).toBe('::1');
    const b = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect(formatAddress(b)).toBe('2001:db8:0:1::1');
    expect(() => formatAddress(new Uint8Array(3))).toThrow(RangeError);
  });
});
