// Two namespaces, each a real TUN + Forwarder + UdpDataSocket (udp-node.ts), one session
// between them keyed by the test; iperf3 TCP and UDP between pod addresses over IPv4 and
// IPv6, inside and outside. While iperf3 runs: replayed datagrams captured from the wire,
// forged, truncated, stale-key and random ones are dropped and counted; a rekey keeps the
// flow; a DF flow over a smaller tunnel MTU gets ICMP errors and completes.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import {
  datagramsFromPcap,
  LINK_B,
  POD_A,
  POD_B,
  sealDatagram,
  sleep,
  UDP_PORT,
  type UdpNodeStats,
  UdpPair,
} from './udp-harness.ts';

const tmp = mkdtempSync(join(tmpdir(), 'em-udp-'));
const pair = new UdpPair();

beforeAll(async () => {
  await pair.start();
});

afterAll(async () => {
  await pair.close();
  rmSync(tmp, { recursive: true, force: true });
});

const gbps = (bps: number) => `${(bps / 1e9).toFixed(2)} Gbit/s`;
const flowDrops = (s: UdpNodeStats) => Object.keys(s.forwarder.drops).filter((r) => r !== 'no-route');
const delta = (after: Record<string, number>, before: Record<string, number>, key: string) =>
  (after[key] ?? 0) - (before[key] ?? 0);

describe('UDP sessions between two forwarders', () => {
  for (const family of [4, 6] as const) {
    it(`carries iperf3 TCP over inner IPv${family} (outer IPv4), byte counters matching`, async () => {
      const [a0, b0] = await pair.settledStats();
      const r = await pair.iperf({ family, seconds: 3 });
      const [a, b] = await pair.settledStats();
      console.log(`TCP inner IPv${family} over UDP sessions: ${gbps(r.bitsPerSecond)} (loaded machine)`);
      expect(r.bytes).toBeGreaterThan(2_000_000);
      expect(b.forwarder.peers['nodeA']!.rxBytes - b0.forwarder.peers['nodeA']!.rxBytes).toBeGreaterThan(r.bytes);
      expect(a.tun.rxSuperPackets - a0.tun.rxSuperPackets).toBeGreaterThan(10); // TSO super-packets segmented in C
      expect(a.udp.txDatagrams - a0.udp.txDatagrams).toBeGreaterThan(1000);
      expect(flowDrops(a)).toEqual([]);
      expect(flowDrops(b)).toEqual([]);
      expect(b.udp.drops).toEqual({});
    });

    it(`carries iperf3 UDP over inner IPv${family}`, async () => {
      const r = await pair.iperf({ family, seconds: 3, udpBitrate: '200M' });
      console.log(`UDP inner IPv${family} at 200 Mbit/s offered: ${gbps(r.bitsPerSecond)}, lost ${r.lostPercent}%`);
      expect(r.bytes).toBeGreaterThan(10_000_000);
      expect(r.lostPercent!).toBeLessThan(50); // a loaded 2-core machine; the real bar is the bench's
    });
  }

  it('carries TCP and UDP over an IPv6 underlay (outer IPv6), then back on IPv4', async () => {
    await pair.useUnderlay(6);
    try {
      const [, b0] = await pair.settledStats();
      const tcp = await pair.iperf({ family: 4, seconds: 2 });
      const udp = await pair.iperf({ family: 6, seconds: 2, udpBitrate: '100M' });
      const [, b] = await pair.settledStats();
      console.log(`outer IPv6: TCP ${gbps(tcp.bitsPerSecond)}, UDP lost ${udp.lostPercent}%`);
      expect(tcp.bytes).toBeGreaterThan(1_000_000);
      expect(udp.bytes).toBeGreaterThan(1_000_000);
      expect(b.udp.rxDatagrams - b0.udp.rxDatagrams).toBeGreaterThan(1000);
      // the datagrams really crossed as IPv6: the veth's IPv6 counters moved
      const ip6 = await run('ip', ['netns', 'exec', pair.nsB, 'cat', '/proc/net/snmp6']);
      expect(Number(/Udp6InDatagrams\s+(\d+)/.exec(ip6)![1])).toBeGreaterThan(1000);
    } finally {
      await pair.useUnderlay(4);
    }
  });

  it('drops replayed (captured from the wire), forged, truncated, stale-key and random datagrams while iperf3 keeps going', async () => {
    // capture session datagrams on B's side of the veth while a flow runs
    const pcap = join(tmp, 'wire.pcap');
    const dump = spawn(
      'ip',
      [
        'netns',
        'exec',
        pair.nsB,
        'tcpdump',
        '-i',
        pair.vethB,
        '-nn',
        '-U',
        '-c',
        '300',
        '-w',
        pcap,
        'udp',
        'dst',
        'port',
        String(UDP_PORT),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const exited = new Promise<void>((r) => dump.on('exit', () => r()));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('tcpdump did not start')), 15_000);
      dump.stderr!.on('data', (d: Buffer) => {
        if (d.toString().includes('listening')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    await pair.iperf({ family: 4, seconds: 1 });
    const stop = setTimeout(() => dump.kill('SIGINT'), 5000);
    await exited;
    clearTimeout(stop);
    const keys = pair.keys;
    // only what A sent to B (the veth also carries B's datagrams to A)
    const all = datagramsFromPcap(pcap, UDP_PORT).filter((d) => d.readUInt32LE(4) === keys.b.localIndex);
    expect(all.length).toBeGreaterThan(100);
    const captured = all.slice(0, 1000);
    const inner = Buffer.alloc(40); // the payload matters not: these never open
    // Replays are refused before any crypto; forged and cut copies get fresh counters so that
    // it is the tag that refuses them.
    const fresh = (d: Buffer, i: number) => {
      const f = Buffer.from(d);
      f.writeBigUInt64LE(2n ** 40n + BigInt(i), 8);
      return f;
    };
    const forged = captured.slice(0, 50).map((d, i) => {
      const f = i % 2 ? fresh(d, i) : Buffer.from(d);
      if (i % 2 === 0)
        f.writeBigUInt64LE(2n ** 40n + BigInt(i), 8); // the counter is authenticated too
      else f[16 + (i % (f.length - 16))]! ^= 0x01; // one bit of ciphertext or tag
      return f;
    });
    const truncated = captured
      .slice(0, 50)
      .map((d, i) => (i % 2 ? d.subarray(0, 20) : fresh(d, 100 + i).subarray(0, d.length - 1)));
    const staleKey = Array.from({ length: 50 }, (_, i) =>
      sealDatagram(Buffer.alloc(32, 7), keys.b.localIndex, 10n ** 12n + BigInt(i), inner),
    );
    const random = Array.from({ length: 50 }, (_, i) =>
      Buffer.from(Array.from({ length: 1 + i * 29 }, () => (Math.random() * 256) | 0)),
    );
    const files: Record<string, Buffer[]> = { captured, forged, truncated, staleKey, random };
    for (const [name, list] of Object.entries(files))
      writeFileSync(join(tmp, name), list.map((d) => d.toString('hex')).join('\n'));

    const [, b0] = await pair.settledStats();
    const to = { ip: LINK_B[4], port: UDP_PORT };
    const result = await pair.iperf({ family: 4, seconds: 4 }, async () => {
      await sleep(500);
      for (const name of Object.keys(files)) await pair.nodeA.command('inject', { to, file: join(tmp, name) });
    });
    const [, b] = await pair.settledStats();
    const dropped = Object.fromEntries(Object.keys(b.udp.drops).map((k) => [k, delta(b.udp.drops, b0.udp.drops, k)]));
    console.log(`iperf3 under attack: ${gbps(result.bitsPerSecond)}; B's UDP drops: ${JSON.stringify(dropped)}`);
    expect(result.bytes).toBeGreaterThan(2_000_000);
    const d = (k: string) => delta(b.udp.drops, b0.udp.drops, k);
    expect(d('replay')).toBe(captured.length); // every captured datagram had already been opened
    expect(d('auth-failed')).toBe(forged.length + staleKey.length + truncated.length / 2);
    expect(d('short')).toBeGreaterThanOrEqual(truncated.length / 2);
    expect(d('short') + d('bad-type') + d('unknown-index') + d('auth-failed') + d('replay') + d('oversize')).toBe(
      captured.length + forged.length + truncated.length + staleKey.length + random.length,
    );
    expect(flowDrops(b)).toEqual([]); // nothing hostile reached the forwarder
  });

  it('keeps the flow across a rekey under load (new index, switch, old removed after a grace period)', async () => {
    const oldA = pair.keys.a.localIndex;
    const result = await pair.iperf({ family: 4, seconds: 5 }, async () => {
      await sleep(1500);
      await pair.rekey(101, 201, 1000);
    });
    const [a, b] = await pair.settledStats();
    console.log(`iperf3 across a rekey: ${gbps(result.bitsPerSecond)}`);
    expect(result.bytes).toBeGreaterThan(5_000_000);
    expect(await pair.nodeA.command('session', { localIndex: oldA })).toBeNull();
    const newB = await pair.nodeB.command<{ rxPackets: number }>('session', { localIndex: 201 });
    expect(newB.rxPackets).toBeGreaterThan(1000);
    expect(flowDrops(a)).toEqual([]);
    expect(flowDrops(b)).toEqual([]);
  });

  it('answers DF packets above a reduced tunnel MTU with ICMP, and TCP completes at the smaller size', async () => {
    // the underlay now carries 1400 bytes: 1400 - 28 (IPv4 + UDP) - 32 (session) = 1340 inside
    await run('ip', ['netns', 'exec', pair.nsA, 'ip', 'link', 'set', pair.vethA, 'mtu', '1400']);
    await run('ip', ['netns', 'exec', pair.nsB, 'ip', 'link', 'set', pair.vethB, 'mtu', '1400']);
    await pair.nodeA.command('set-link-mtu', { mtu: 1340 });
    await pair.nodeB.command('set-link-mtu', { mtu: 1340 });
    try {
      for (const family of [4, 6] as const) {
        const [a0] = await pair.settledStats();
        const r = await pair.iperf({ family, seconds: 3 });
        const [a] = await pair.settledStats();
        console.log(
          `TCP IPv${family} through a 1340-byte tunnel MTU: ${gbps(r.bitsPerSecond)}, ICMP sent ${a.forwarder.icmpTooBig - a0.forwarder.icmpTooBig}`,
        );
        expect(r.bytes).toBeGreaterThan(2_000_000);
        expect(a.forwarder.icmpTooBig - a0.forwarder.icmpTooBig).toBeGreaterThan(0);
        expect(delta(a.forwarder.drops, a0.forwarder.drops, 'too-big')).toBeGreaterThan(0);
        // the sender's kernel learnt the path MTU for the peer pod
        const route = await run('ip', [
          'netns',
          'exec',
          pair.nsA,
          'ip',
          `-${family}`,
          'route',
          'get',
          POD_B[family],
          'from',
          POD_A[family],
        ]);
        expect(route).toMatch(/mtu 1340/);
        expect(a.udp.drops['oversize'] ?? 0).toBe(0); // nothing too big reached the C engine
      }
    } finally {
      await pair.nodeA.command('set-link-mtu', { mtu: 1420 });
      await pair.nodeB.command('set-link-mtu', { mtu: 1420 });
      await run('ip', ['netns', 'exec', pair.nsA, 'ip', 'link', 'set', pair.vethA, 'mtu', '1500']);
      await run('ip', ['netns', 'exec', pair.nsB, 'ip', 'link', 'set', pair.vethB, 'mtu', '1500']);
    }
  });
});
