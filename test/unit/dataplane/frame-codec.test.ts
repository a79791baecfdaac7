import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeFrame,
  FRAME_HEADER_LEN,
  FrameDecoder,
  FrameError,
  PACKET_HEADER_LEN,
} from '../../../dataplane/frame-codec.ts';
import type { Packet } from '../../../dataplane/types.ts';

const packetArb = fc.record({
  vnet: fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 10, maxLength: 10 })),
  data: fc.uint8Array({ minLength: 0, maxLength: 3000 }),
});
const batchArb = fc.array(packetArb, { minLength: 1, maxLength: 8 });

/** Splits `bytes` at the given (sorted, deduplicated) cut points. */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.slice(from, p)); // copies: a chunk owns its memory, as a socket's does
    from = p;
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const plain = (packets: Packet[]) => packets.map((p) => ({ vnet: [...p.vnet], data: [...p.data] }));

describe('frame codec', () => {
  it('lays a frame out as documented: header, then (vnet len, data len, vnet, data) per packet', () => {
    const frame = encodeFrame([{ vnet: new Uint8Array([1, 2]), data: new Uint8Array([9, 8, 7]) }]);
    expect([...frame]).toEqual([0x45, 0x4d, 1, 0, 0, 0, 0, 1, 0, 0, 0, 23, 0, 2, 0, 0, 0, 3, 1, 2, 9, 8, 7]);
    expect(frame.length).toBe(FRAME_HEADER_LEN + PACKET_HEADER_LEN + 5);
  });

  it('decodes any sequence of frames under any chunking (property)', () => {
    fc.assert(
      fc.property(
        fc.array(batchArb, { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (batches, cuts) => {
          const stream = concat(batches.map(encodeFrame));
          const decoder = new FrameDecoder({ maxFrameBytes: 64 * 1024 });
          const got: Packet[] = [];
          for (const chunk of split(stream, cuts)) got.push(...decoder.push(chunk));
          expect(plain(got)).toEqual(plain(batches.flat()));
          expect(decoder.bufferedBytes).toBe(0);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('decodes byte by byte', () => {
    const batch = [
      { vnet: new Uint8Array(10).fill(3), data: new Uint8Array(100).fill(4) },
      { vnet: new Uint8Array(0), data: new Uint8Array(1) },
    ];
    const stream = concat([encodeFrame(batch), encodeFrame(batch)]);
    const decoder = new FrameDecoder();
    const got: Packet[] = [];
    for (let i = 0; i < stream.length; i++) got.push(...decoder.push(stream.subarray(i, i + 1)));
    expect(plain(got)).toEqual(plain([...batch, ...batch]));
  });

  it('refuses an oversized frame from its header, before buffering its body', () => {
    const big = encodeFrame([{ vnet: new Uint8Array(0), data: new Uint8Array(5000) }]);
    const decoder = new FrameDecoder({ maxFrameBytes: 4096 });
    expect(() => decoder.push(big.subarray(0, FRAME_HEADER_LEN))).toThrow(/exceeds the limit of 4096/);
    expect(decoder.bufferedBytes).toBe(0);
    // the decoder stays failed: the stream must be reset
    expect(() => decoder.push(encodeFrame([{ vnet: new Uint8Array(0), data: new Uint8Array(1) }]))).toThrow(FrameError);
  });

  it('rejects garbled frames with FrameError', () => {
    const good = () => encodeFrame([{ vnet: new Uint8Array(10), data: new Uint8Array(20) }]);
    const cases: [string, (f: Uint8Array) => void, RegExp][] = [
      ['magic', (f) => (f[0] = 0x47), /magic/],
      ['version', (f) => (f[2] = 9), /version 9/],
      ['flags', (f) => (f[3] = 1), /flags/],
      ['zero packets', (f) => (f[7] = 0), /no packets/],
      ['count too big for length', (f) => (f[7] = 200), /too small/],
      ['two packets claimed, one present', (f) => (f[7] = 2), /ends inside packet|overruns/],
      ['data length overruns', (f) => (f[17] = 200), /overruns/],
      ['stray bytes', (f) => (f[17] = 10), /stray bytes/],
      ['vnet too long', (f) => (f[12] = 1), /vnet header of/],
    ];
    for (const [name, corrupt, message] of cases) {
      const frame = good();
      corrupt(frame);
      expect(() => new FrameDecoder().push(frame), name).toThrow(message);
    }
  });

  it('never accepts random garbage silently nor buffers past the limit (property)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 4000 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (junk, cuts) => {
          const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
          try {
            for (const chunk of split(junk, cuts)) {
              decoder.push(chunk);
              expect(decoder.bufferedBytes).toBeLessThanOrEqual(1024);
            }
          } catch (err) {
            expect(err).toBeInstanceOf(FrameError);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses to encode an empty batch', () => {
    expect(() => encodeFrame([])).toThrow(RangeError);
  });
});
