// The UDP session path with the event-loop receiver (uv_poll on Node's loop instead of a
// reader thread): the same two-namespace bed as udp-session.test.ts, TCP and UDP iperf3.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UdpPair } from './udp-harness.ts';

const pair = new UdpPair();

beforeAll(async () => {
  await pair.start({ receiver: 'loop' });
});

afterAll(async () => {
  await pair.close();
});

describe('UDP sessions read on the event loop', () => {
  it('carries iperf3 TCP (inner IPv4 and IPv6), segments coalesced again', async () => {
    for (const family of [4, 6] as const) {
      const [, b0] = await pair.settledStats();
      const r = await pair.iperf({ family, seconds: 3 });
      const [a, b] = await pair.settledStats();
      console.log(`loop receiver, TCP IPv${family}: ${(r.bitsPerSecond / 1e9).toFixed(2)} Gbit/s (loaded machine)`);
      expect(r.bytes).toBeGreaterThan(2_000_000);
      expect(b.udp.rxCoalesced - b0.udp.rxCoalesced).toBeGreaterThan(1000);
      expect(Object.keys(a.forwarder.drops).filter((k) => k !== 'no-route')).toEqual([]);
      expect(Object.keys(b.forwarder.drops).filter((k) => k !== 'no-route')).toEqual([]);
      expect(b.udp.drops).toEqual({});
    }
  });

  it('carries iperf3 UDP', async () => {
    const r = await pair.iperf({ family: 4, seconds: 3, udpBitrate: '200M' });
    console.log(`loop receiver, UDP at 200 Mbit/s: lost ${r.lostPercent}%`);
    expect(r.bytes).toBeGreaterThan(10_000_000);
    expect(r.lostPercent!).toBeLessThan(50);
  });
});
