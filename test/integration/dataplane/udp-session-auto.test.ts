// The UDP session path with both readers on 'auto': the TUN and the socket are read on the
// event loop while traffic is light (no thread hop for a ping) and by their threads under
// load. Same two-namespace bed as udp-session.test.ts: iperf3 TCP, then idle, then a ping.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runIn } from '../../../common/netns.ts';
import { POD_A, POD_B, sleep, UdpPair } from './udp-harness.ts';

const pair = new UdpPair();

beforeAll(async () => {
  await pair.start({ receiver: 'auto', tunReader: 'auto' });
});

afterAll(async () => {
  await pair.close();
});

describe("UDP sessions with the 'auto' readers", () => {
  it('pings on the loop, hands both readers to their threads under iperf3 TCP, and back when idle', async () => {
    const ping = () => runIn(pair.nsA, 'ping', ['-c', '3', '-i', '0.05', '-W', '2', '-I', POD_A[4], POD_B[4]]);
    expect(await ping()).toMatch(/3 received/);
    const [a0, b0] = await pair.settledStats();
    // Light traffic stays on the loop: nothing handed over.
    expect(a0.tun.readerHandoffs).toBe(0);
    expect(b0.udp.receiverHandoffs).toBe(0);
    const r = await pair.iperf({ family: 4, seconds: 3 });
    console.log(`auto readers, TCP: ${(r.bitsPerSecond / 1e9).toFixed(2)} Gbit/s (loaded machine)`);
    expect(r.bytes).toBeGreaterThan(2_000_000);
    await sleep(100); // AUTO_IDLE_MS is 20 ms
    const [a, b] = await pair.settledStats();
    expect(a.tun.readerHandoffs).toBeGreaterThan(0);
    expect(b.udp.receiverHandoffs).toBeGreaterThan(0);
    // Every handoff came back: the loop reads again when idle.
    expect(a.tun.readerHandbacks).toBe(a.tun.readerHandoffs);
    expect(b.udp.receiverHandbacks).toBe(b.udp.receiverHandoffs);
    expect(b.udp.rxCoalesced - b0.udp.rxCoalesced).toBeGreaterThan(1000);
    expect(Object.keys(a.forwarder.drops).filter((k) => k !== 'no-route')).toEqual([]);
    expect(Object.keys(b.forwarder.drops).filter((k) => k !== 'no-route')).toEqual([]);
    expect(b.udp.drops).toEqual({});
    expect(await ping()).toMatch(/3 received/);
  });

  it('hands the readers back to the loop when traffic turns sparse, though it never stops', async () => {
    // A ping every 5 ms from before the load until well after it: the devices are never idle
    // for AUTO_IDLE_MS (20 ms), so only the sparse rule can bring the readers back while it runs.
    const pinging = runIn(pair.nsA, 'ping', ['-c', '500', '-i', '0.005', '-W', '2', '-I', POD_A[4], POD_B[4]]);
    await sleep(200);
    const [a0, b0] = [await pair.nodeA.stats(), await pair.nodeB.stats()];
    await pair.iperf({ family: 4, seconds: 1 });
    await sleep(500); // 100 more pings: every one a light batch after a wait of 2 ms or more
    const [a, b] = [await pair.nodeA.stats(), await pair.nodeB.stats()];
    const out = await pinging;
    expect(a.tun.readerHandoffs).toBeGreaterThan(a0.tun.readerHandoffs);
    expect(b.udp.receiverHandoffs).toBeGreaterThan(b0.udp.receiverHandoffs);
    expect(a.tun.readerHandbacks).toBe(a.tun.readerHandoffs);
    expect(b.udp.receiverHandbacks).toBe(b.udp.receiverHandoffs);
    expect(out).toMatch(/500 received/);
  });

  it('carries iperf3 UDP', async () => {
    const r = await pair.iperf({ family: 4, seconds: 3, udpBitrate: '200M' });
    console.log(`auto readers, UDP at 200 Mbit/s: lost ${r.lostPercent}%`);
    expect(r.bytes).toBeGreaterThan(10_000_000);
    expect(r.lostPercent!).toBeLessThan(50);
  });
});
