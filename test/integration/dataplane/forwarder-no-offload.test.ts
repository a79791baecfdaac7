// Node B's TUN has no offloads, node A's has: A reads TCP super-packets and ships them whole;
// B's forwarder must segment them in software (dataplane/segmentation.ts) before writing.
// The kernel verifies every TCP checksum of what B writes (a TUN without vnet headers hands
// the stack CHECKSUM_NONE packets), so a flow that completes proves the segments are right.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ForwarderPair } from './forwarder-harness.ts';

const pair = new ForwarderPair();

beforeAll(async () => {
  await pair.start({ offloadB: false });
});

afterAll(async () => {
  await pair.close();
});

describe('forwarder into a TUN without offloads', () => {
  it('segments IPv6 (TSO6) super-packets too', async () => {
    const [, b0] = await pair.settledStats();
    const result = await pair.iperf(3, undefined, 6);
    const [a, b] = await pair.settledStats();
    expect(result.bytes).toBeGreaterThan(2_000_000);
    const received = b.forwarder.peers['nodeA']!.rxPackets - b0.forwarder.peers['nodeA']!.rxPackets;
    expect(b.tun.txPackets - b0.tun.txPackets).toBeGreaterThan(2 * received);
    expect(b.tun.txSuperPackets).toBe(0);
    expect(b.forwarder.peers['nodeA']!.rxBytes).toBe(a.forwarder.peers['nodeB']!.txBytes);
    expect(b.tun.errors).toBe(0);
  });

  it('segments super-packets in software and the kernel accepts every segment', async () => {
    const [, b0] = await pair.settledStats();
    const result = await pair.iperf(3);
    const [a, b] = await pair.settledStats();
    const gigabytes = (b.forwarder.peers['nodeA']!.rxBytes - b0.forwarder.peers['nodeA']!.rxBytes) / 1e9;
    console.log(
      `iperf3 A (offloads) → B (no offloads, software GSO): ${(result.bitsPerSecond / 1e9).toFixed(2)} Gbit/s; ` +
        `B received ${b.forwarder.peers['nodeA']!.rxPackets} packets, wrote ${b.tun.txPackets} segments, ` +
        `receiver CPU ${((b.cpuSeconds - b0.cpuSeconds) / gigabytes).toFixed(2)} s/GB`,
    );
    expect(result.bytes).toBeGreaterThan(2_000_000);
    expect(a.tun.rxSuperPackets).toBeGreaterThan(20); // A still reads super-packets...
    expect(b.tun.txSuperPackets).toBe(0); // ...B writes none: no packet above its MTU
    // every received super-packet became several wire-sized segments
    expect(b.tun.txPackets).toBeGreaterThan(2 * b.forwarder.peers['nodeA']!.rxPackets);
    expect(b.forwarder.peers['nodeA']!.rxBytes).toBe(a.forwarder.peers['nodeB']!.txBytes);
    expect(Object.keys(b.forwarder.drops).filter((r) => r !== 'no-route')).toEqual([]);
    expect(b.tun.errors).toBe(0);
    // the reverse direction carries B's MTU-sized packets (ACKs) without vnet offload info
    expect(a.forwarder.peers['nodeB']!.rxBytes).toBe(b.forwarder.peers['nodeA']!.txBytes);
  });
});
