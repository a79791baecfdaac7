// The tunnel protocol over a real libp2p pair (TCP + noise + yamux) on loopback.

import type { Connection, Stream } from '@libp2p/interface';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeFrame, FRAME_HEADER_LEN, PACKET_HEADER_LEN } from '../../../dataplane/frame-codec.ts';
import type { Host } from '../../../overlay/host.ts';
import {
  decodeHello,
  encodeHello,
  negotiate,
  TUNNEL_PROTOCOL,
  TUNNEL_VERSION,
  type TunnelCaps,
  TunnelStream,
} from '../../../overlay/tunnel.ts';
import { loopbackHosts } from '../../support/loopback-hosts.ts';

/** A frame of exactly `size` bytes whose one packet is filled with `fill`. */
function frameOf(size: number, fill: number): Uint8Array {
  const data = new Uint8Array(size - FRAME_HEADER_LEN - PACKET_HEADER_LEN).fill(fill);
  return encodeFrame([{ vnet: new Uint8Array(0), data }]);
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

describe('tunnel hello', () => {
  it('round-trips and negotiates the common capabilities', () => {
    const on = decodeHello(encodeHello({ offload: true }));
    expect(on).toEqual({ version: TUNNEL_VERSION, caps: { offload: true } });
    expect(negotiate({ offload: true }, on)).toEqual({ offload: true });
    expect(negotiate({ offload: false }, on)).toEqual({ offload: false });
    expect(negotiate({ offload: true }, decodeHello(encodeHello({ offload: false })))).toEqual({ offload: false });
  });
  it('rejects a foreign hello and another version', () => {
    expect(() => decodeHello(Uint8Array.of(1, 2, 3, 4, 5, 6))).toThrow(/not an edgemesh tunnel/);
    expect(() => negotiate({ offload: true }, decodeHello(encodeHello({ offload: true }, 9)))).toThrow(/version 9/);
  });
});

interface Pair {
  a: Host;
  b: Host;
  conn: Connection;
}

async function hostPair(): Promise<Pair> {
  const hosts = await loopbackHosts(2);
  const [a, b] = hosts as [Host, Host];
  const conn = await a.dial(b.getMultiaddrs()[0]!);
  return { a, b, conn };
}

/** Opens a tunnel A→B; B's side is built by its protocol handler. */
async function tunnelPair(
  p: Pair,
  capsA: TunnelCaps,
  capsB: TunnelCaps,
  opts: { onFrameB?: (f: Uint8Array) => void; maxQueueBytes?: number } = {},
) {
  const rxB: Uint8Array[] = [];
  const closedB = Promise.withResolvers<Error | undefined>();
  const sideB = Promise.withResolvers<TunnelStream>();
  await p.b.handle(
    TUNNEL_PROTOCOL,
    (stream, connection) => {
      sideB.resolve(
        new TunnelStream({
          stream,
          connection,
          localCaps: capsB,
          onFrame: opts.onFrameB ?? ((f) => rxB.push(f.slice())),
          onClose: (_t, err) => closedB.resolve(err),
        }),
      );
    },
    { force: true },
  );
  const stream = await p.conn.newStream(TUNNEL_PROTOCOL);
  const closedA = Promise.withResolvers<Error | undefined>();
  const a = new TunnelStream({
    stream,
    connection: p.conn,
    localCaps: capsA,
    onFrame: () => {},
    onClose: (_t, err) => closedA.resolve(err),
    ...(opts.maxQueueBytes ? { maxQueueBytes: opts.maxQueueBytes } : {}),
  });
  return { a, b: await sideB.promise, rxB, closedA: closedA.promise, closedB: closedB.promise, stream };
}

describe('tunnel stream over libp2p', () => {
  let pair: Pair | undefined;
  afterEach(async () => {
    await Promise.all([pair?.a.stop(), pair?.b.stop()]);
    pair = undefined;
  });

  it('negotiates offload and carries whole frames in order', async () => {
    pair = await hostPair();
    const t = await tunnelPair(pair, { offload: true }, { offload: true });
    expect(await t.a.ready).toEqual({ offload: true });
    expect(await t.b.ready).toEqual({ offload: true });
    expect(t.a.direct).toBe(true);
    const frames = Array.from({ length: 50 }, (_, i) => frameOf(1000 + i * 997, i));
    for (const f of frames) expect(t.a.send(f)).toBe(true);
    await expect.poll(() => t.rxB.length, { timeout: 5000 }).toBe(50);
    expect(t.rxB.every((f, i) => sameBytes(f, frames[i]!))).toBe(true);
    // One length on the wire: the frame header's. The stream carries the frames and nothing else.
    expect(t.b.rxBytes).toBe(frames.reduce((n, f) => n + f.length, 0));
    expect(t.a.txBytes).toBe(t.b.rxBytes);
  });

  it('coalesces the frames of one event-loop turn into few stream writes, in order', async () => {
    pair = await hostPair();
    const t = await tunnelPair(pair, { offload: false }, { offload: false });
    await t.a.ready;
    let writes = 0;
    const send = t.stream.send.bind(t.stream);
    t.stream.send = (data) => {
      writes++;
      return send(data);
    };
    // 1000 MTU-sized frames in one turn, as a burst of TUN batches would give.
    const frames = Array.from({ length: 1000 }, (_, i) => frameOf(1400, i & 0xff));
    for (const f of frames) expect(t.a.send(f)).toBe(true);
    expect(writes).toBe(0); // nothing written before the turn ends
    await expect.poll(() => t.rxB.length, { timeout: 5000 }).toBe(1000);
    expect(t.rxB.every((f, i) => sameBytes(f, frames[i]!))).toBe(true);
    // 1.4 MB in 256 KiB writes: 6 writes, not 1000.
    expect(writes).toBeLessThanOrEqual(8);
    expect(t.a.txFrames).toBe(1000);
    expect(t.a.txBytes).toBe(1000 * 1400);
  });

  it('turns offload off when one side lacks it', async () => {
    pair = await hostPair();
    const t = await tunnelPair(pair, { offload: true }, { offload: false });
    expect(await t.a.ready).toEqual({ offload: false });
    expect(await t.b.ready).toEqual({ offload: false });
  });

  it('resets the stream when the peer speaks another version', async () => {
    pair = await hostPair();
    const closedB = Promise.withResolvers<Error | undefined>();
    await pair.b.handle(TUNNEL_PROTOCOL, (stream, connection) => {
      new TunnelStream({
        stream,
        connection,
        localCaps: { offload: false },
        onFrame: () => {},
        onClose: (_t, e) => closedB.resolve(e),
      });
    });
    const raw: Stream = await pair.conn.newStream(TUNNEL_PROTOCOL);
    raw.send(encodeHello({ offload: false }, TUNNEL_VERSION + 1));
    expect((await closedB.promise)?.message).toMatch(/version/);
  });

  it('resets the stream on a garbage or oversized frame header, and when the forwarder rejects a frame', async () => {
    pair = await hostPair();
    const t = await tunnelPair(
      pair,
      { offload: false },
      { offload: false },
      {
        onFrameB: () => {
          throw new Error('FrameError: bad frame');
        },
      },
    );
    await t.a.ready;
    t.a.send(frameOf(100, 1));
    expect((await t.closedB)?.message).toMatch(/FrameError/);
    expect(t.b.badFrames).toBe(0); // the forwarder's refusal, counted by the overlay
    await expect.poll(() => t.a.closed, { timeout: 5000 }).toBe(true);

    const t2 = await tunnelPair(pair, { offload: false }, { offload: false });
    await t2.a.ready;
    // A valid header announcing 64 MiB: refused from the header alone, nothing buffered.
    const header = frameOf(100, 0).subarray(0, FRAME_HEADER_LEN);
    new DataView(header.buffer, header.byteOffset).setUint32(8, 64 * 1024 * 1024);
    t2.stream.send(header);
    expect((await t2.closedB)?.message).toMatch(/exceeds the limit/);
    expect(t2.b.badFrames).toBe(1);

    const t3 = await tunnelPair(pair, { offload: false }, { offload: false });
    await t3.a.ready;
    t3.stream.send(new Uint8Array(100).fill(7)); // a v1 record or any garbage: no frame magic
    expect((await t3.closedB)?.message).toMatch(/bad frame magic/);
    expect(t3.b.badFrames).toBe(1);
    expect(t3.rxB).toEqual([]);
  });

  it('bounds the send queue: frames beyond it are refused, accepted ones all arrive', async () => {
    pair = await hostPair();
    const max = 256 * 1024;
    const t = await tunnelPair(pair, { offload: false }, { offload: false }, { maxQueueBytes: max });
    await t.a.ready;
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 400; i++) {
      if (t.a.send(frameOf(64 * 1024, i & 0xff))) accepted++;
      else refused++;
      expect(t.a.queuedBytes).toBeLessThanOrEqual(max);
    }
    expect(refused).toBeGreaterThan(0);
    expect(t.a.drops).toBe(refused);
    await expect.poll(() => t.rxB.length, { timeout: 10_000 }).toBe(accepted);
  });
});
