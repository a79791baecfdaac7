// Two namespaces, each with a real TUN (offloads on) driven by its own forwarder process,
// joined by a plain TCP socket carrying the frame codec; iperf3 between pod addresses
// routed through the TUNs (see forwarder-harness.ts).
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { ForwarderPair, POD_A, POD_B, sleep } from './forwarder-harness.ts';

const tmp = mkdtempSync(join(tmpdir(), 'em-fwd-'));
const pair = new ForwarderPair();

beforeAll(async () => {
  await pair.start();
});

afterAll(async () => {
  await pair.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('forwarder between two TUNs over a socket link', () => {
  it('carries iperf3 TCP as GSO super-packets, with matching byte counters on both sides', async () => {
    const pcap = join(tmp, 'flow.pcap');
    const [a0, b0] = await pair.settledStats();
    await pair.nodeA.command('capture-start');
    const result = await pair.iperf(3);
    await pair.nodeA.command('capture-stop', pcap);
    const [a, b] = await pair.settledStats();
    const gigabytes = (a.forwarder.peers['nodeB']!.txBytes - a0.forwarder.peers['nodeB']!.txBytes) / 1e9;
    console.log(
      `iperf3 through the forwarders (offloads on): ${(result.bitsPerSecond / 1e9).toFixed(2)} Gbit/s; ` +
        `CPU s/GB: sender ${((a.cpuSeconds - a0.cpuSeconds) / gigabytes).toFixed(2)}, ` +
        `receiver ${((b.cpuSeconds - b0.cpuSeconds) / gigabytes).toFixed(2)} (process CPU incl. capture)`,
    );
    expect(result.bytes).toBeGreaterThan(2_000_000);
    // super-packets larger than the MTU were read from A's TUN and written into B's
    expect(a.tun.rxSuperPackets).toBeGreaterThan(20);
    expect(b.tun.txSuperPackets).toBeGreaterThan(20);
    // what one side sent is exactly what the other received, both directions
    const aToB = a.forwarder.peers['nodeB']!;
    const bFromA = b.forwarder.peers['nodeA']!;
    expect(bFromA.rxBytes).toBe(aToB.txBytes);
    expect(bFromA.rxPackets).toBe(aToB.txPackets);
    expect(aToB.rxBytes).toBe(bFromA.txBytes);
    expect(aToB.rxPackets).toBe(bFromA.txPackets);
    expect(aToB.txBytes).toBeGreaterThan(result.bytes);
    // Nothing of the flow was dropped. The only drops allowed are 'no-route' ones: the
    // kernel's own IPv6 router solicitations / MLD reports on a fresh TUN have no peer.
    expect(Object.keys(a.forwarder.drops).filter((r) => r !== 'no-route')).toEqual([]);
    expect(Object.keys(b.forwarder.drops).filter((r) => r !== 'no-route')).toEqual([]);
    expect(a.tun.errors + b.tun.errors).toBe(0);
    // the capture is a pcap tcpdump reads, and it holds the iperf3 flow both ways
    expect(statSync(pcap).size).toBeGreaterThan(24);
    const dump = await run('tcpdump', ['-nn', '-r', pcap]);
    expect(dump).toMatch(
      new RegExp(`IP ${POD_A.replaceAll('.', '\\.')}\\.\\d+ > ${POD_B.replaceAll('.', '\\.')}\\.5201: Flags`),
    );
    expect(dump).toMatch(
      new RegExp(`IP ${POD_B.replaceAll('.', '\\.')}\\.5201 > ${POD_A.replaceAll('.', '\\.')}\\.\\d+: Flags`),
    );
  });

  it('carries IPv6 TCP the same way (TSO6 super-packets, IPv6 LPM and policy)', async () => {
    const [a0, b0] = await pair.settledStats();
    const result = await pair.iperf(3, undefined, 6);
    const [a, b] = await pair.settledStats();
    console.log(`iperf3 over IPv6 through the forwarders: ${(result.bitsPerSecond / 1e9).toFixed(2)} Gbit/s`);
    expect(result.bytes).toBeGreaterThan(2_000_000);
    expect(a.tun.rxSuperPackets - a0.tun.rxSuperPackets).toBeGreaterThan(20);
    expect(b.tun.txSuperPackets - b0.tun.txSuperPackets).toBeGreaterThan(20);
    expect(b.forwarder.peers['nodeA']!.rxBytes).toBe(a.forwarder.peers['nodeB']!.txBytes);
    expect(a.forwarder.peers['nodeB']!.rxBytes).toBe(b.forwarder.peers['nodeA']!.txBytes);
    expect(Object.keys(b.forwarder.drops).filter((r) => r !== 'no-route')).toEqual([]);
  });

  it('drops and counts malformed frames, malformed, spoofed and transit packets while iperf3 keeps running', async () => {
    const before = await pair.nodeB.stats();
    const result = await pair.iperf(4, async () => {
      await sleep(1000);
      expect(await pair.nodeA.command('inject-bad-packets')).toBe(true);
      await sleep(1000);
      expect(await pair.nodeA.command('inject-garbage')).toBe(true);
      await pair.nodeA.waitFor('link-up', 1); // B reset the stream; A dialled again
    });
    expect(result.bytes).toBeGreaterThan(1_000_000);
    const [a, b] = await pair.settledStats();
    const drops = b.forwarder.drops;
    console.log('drops counted by the receiving forwarder:', JSON.stringify(drops));
    expect(drops['spoofed-source']).toBe(1);
    expect(drops['not-local-destination']).toBe(1);
    expect(drops['malformed-bad-version']).toBe(1);
    expect(drops['malformed-truncated']).toBe(1);
    expect(drops['bad-frame']).toBe(1);
    // The 5 injected faults, plus B's own frames lost while the reset stream was gone:
    // refused by the closing socket ('link-full') or beyond the hold queue ('no-link').
    const delta = (reason: string) => (drops[reason] ?? 0) - (before.forwarder.drops[reason] ?? 0);
    const peerDrops = b.forwarder.peers['nodeA']!.drops - before.forwarder.peers['nodeA']!.drops;
    expect(peerDrops).toBe(5 + delta('link-full') + delta('no-link'));
    expect({ a: a.linkUps, b: b.linkUps }).toEqual({ a: 2, b: 2 }); // exactly one reset, one re-dial
    expect(pair.nodeB.stderr).toMatch(/bad frame magic 0xff.*stream reset/);
  });
});
