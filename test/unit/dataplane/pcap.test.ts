// The capture writer against the real reader: files it writes must parse with tcpdump -r.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PacketCapture } from '../../../dataplane/pcap.ts';
import type { Packet } from '../../../dataplane/types.ts';

const dir = mkdtempSync(join(tmpdir(), 'em-pcap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function ipv4(src: number[], dst: number[], proto: number, payload: number[]): Packet {
  const d = new Uint8Array(20 + payload.length);
  d[0] = 0x45;
  d[2] = d.length >> 8;
  d[3] = d.length & 0xff;
  d[8] = 64;
  d[9] = proto;
  d.set(src, 12);
  d.set(dst, 16);
  d.set(payload, 20);
  return { vnet: new Uint8Array(10), data: d };
}

function udp(src: number[], dst: number[], sport: number, dport: number): Packet {
  return ipv4(src, dst, 17, [sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, 0, 12, 0, 0, 1, 2, 3, 4]);
}

function icmpEcho(src: number[], dst: number[]): Packet {
  return ipv4(src, dst, 1, [8, 0, 0, 0, 0, 1, 0, 1]);
}

function ipv6Udp(): Packet {
  const d = new Uint8Array(48);
  d[0] = 0x60;
  d[5] = 8;
  d[6] = 17;
  d[7] = 64;
  d.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
  d.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 24);
  d.set([0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0], 40);
  return { vnet: new Uint8Array(10), data: d };
}

function tcpdump(cap: PacketCapture, name: string): string {
  const file = join(dir, name);
  writeFileSync(file, cap.toBuffer());
  return execFileSync('tcpdump', ['-n', '-r', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('PacketCapture', () => {
  it('writes a pcap that tcpdump reads back, IPv4 and IPv6', () => {
    const cap = new PacketCapture();
    cap.offer(udp([10, 1, 0, 2], [10, 2, 0, 3], 4000, 5000), { direction: 'tx', peer: 'node-b' });
    cap.offer(icmpEcho([10, 1, 0, 2], [10, 2, 0, 3]), { direction: 'tx', peer: 'node-b' });
    cap.offer(ipv6Udp(), { direction: 'rx', peer: 'node-c' });
    const out = tcpdump(cap, 'all.pcap');
    const lines = out.trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/IP 10\.1\.0\.2\.4000 > 10\.2\.0\.3\.5000: UDP, length 4/);
    expect(lines[1]).toMatch(/IP 10\.1\.0\.2 > 10\.2\.0\.3: ICMP echo request/);
    expect(lines[2]).toMatch(/IP6 fd00::1\.12345 > fd00::2\.53/);
  });

  it('filters by peer, host and protocol', () => {
    const byPeer = new PacketCapture({ filter: { peer: 'node-c' } });
    const byHost = new PacketCapture({ filter: { host: '10.9.9.9' } });
    const byProto = new PacketCapture({ filter: { proto: 'icmp' } });
    const all = [
      { p: udp([10, 1, 0, 2], [10, 9, 9, 9], 1, 2), peer: 'node-b' },
      { p: icmpEcho([10, 9, 9, 9], [10, 1, 0, 2]), peer: 'node-b' },
      { p: udp([10, 1, 0, 2], [10, 3, 3, 3], 3, 4), peer: 'node-c' },
      { p: ipv6Udp(), peer: 'node-c' },
      { p: { vnet: new Uint8Array(10), data: new Uint8Array([0x45, 0]) }, peer: 'node-c' },
    ];
    for (const { p, peer } of all) {
      for (const c of [byPeer, byHost, byProto]) c.offer(p, { direction: 'rx', peer });
    }
    expect(byPeer.packets).toBe(3);
    expect(byHost.packets).toBe(2);
    expect(byProto.packets).toBe(1);
    expect(tcpdump(byProto, 'icmp.pcap')).toMatch(/^.*IP 10\.9\.9\.9 > 10\.1\.0\.2: ICMP echo request/);
    expect(() => new PacketCapture({ filter: { host: 'not-an-ip' } })).toThrow(/not an IP address/);
    expect(() => new PacketCapture({ filter: { proto: 'gre-ish' } })).toThrow(/unknown protocol/);
  });

  it('stops at the packet limit and at the time limit, and cuts at the snaplen', async () => {
    const cap = new PacketCapture({ maxPackets: 2, snaplen: 24 });
    for (let i = 0; i < 5; i++) cap.offer(udp([10, 0, 0, 1], [10, 0, 0, 2], 100 + i, 200), { direction: 'tx' });
    await cap.done;
    expect(cap.packets).toBe(2);
    const out = tcpdump(cap, 'limit.pcap');
    expect(out.trim().split('\n')).toHaveLength(2);
    expect(cap.toBuffer().length).toBe(24 + 2 * (16 + 24));

    const timed = new PacketCapture({ maxSeconds: 0.1 });
    const t0 = Date.now();
    await timed.done;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    timed.offer(udp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2), { direction: 'tx' });
    expect(timed.packets).toBe(0);
  });
});
