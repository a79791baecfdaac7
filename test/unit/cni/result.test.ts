import { describe, expect, it } from 'vitest';
import { hostVethName, podMac } from '../../../cni/names.ts';
import { buildResult } from '../../../cni/result.ts';
import { SUPPORTED_VERSIONS } from '../../../cni/spec.ts';
import { encodeFrame, FrameReader } from '../../../cni/wire.ts';

const view = {
  lease: {
    containerId: 'c',
    ifname: 'eth0',
    ips: [
      { family: 4 as const, address: '10.244.1.5', prefixLength: 24, gateway: '10.244.1.1' },
      { family: 6 as const, address: 'fd00::5', prefixLength: 64, gateway: 'fd00::1' },
    ],
  },
  bridge: { name: 'edgemesh-br0', mac: '02:00:00:00:00:01' },
  host: { name: 'emv000000000000', mac: '02:00:00:00:00:02' },
  pod: { name: 'eth0', mac: '0a:58:0a:f4:01:05', netns: '/var/run/netns/p' },
  mtu: 1400,
};

describe('CNI result conversion', () => {
  it('0.3.x and 0.4.0 carry `version` in ips; 1.x does not; 1.1.0 adds interface mtu', () => {
    for (const v of SUPPORTED_VERSIONS) {
      const r = buildResult(view, v);
      expect(r.cniVersion).toBe(v);
      expect(r.ips!.map((ip) => ip.version)).toEqual(v.startsWith('0.') ? ['4', '6'] : [undefined, undefined]);
      expect(r.interfaces!.every((i) => (v === '1.1.0' ? i.mtu === 1400 : i.mtu === undefined))).toBe(true);
      expect(r.ips!.map((ip) => ip.address)).toEqual(['10.244.1.5/24', 'fd00::5/64']);
      expect(r.ips!.every((ip) => ip.interface === 2 && r.interfaces![2]!.sandbox === '/var/run/netns/p')).toBe(true);
      expect(r.routes).toEqual([
        { dst: '0.0.0.0/0', gw: '10.244.1.1' },
        { dst: '::/0', gw: 'fd00::1' },
      ]);
      expect(r.dns).toBeUndefined();
    }
    expect(buildResult({ ...view, dns: { nameservers: ['1.2.3.4'] } }, '1.0.0').dns).toEqual({
      nameservers: ['1.2.3.4'],
    });
  });
});

describe('names', () => {
  it('host veth names are stable, distinct and at most 15 characters', () => {
    const a = hostVethName('container-1', 'eth0');
    expect(a).toMatch(/^emv[0-9a-f]{12}$/);
    expect(hostVethName('container-1', 'eth0')).toBe(a);
    expect(hostVethName('container-1', 'eth1')).not.toBe(a);
    expect(hostVethName('container-2', 'eth0')).not.toBe(a);
  });
  it('pod MACs embed the IPv4 address, or are hashed without one', () => {
    expect(podMac('10.244.1.5', 'c', 'eth0')).toBe('0a:58:0a:f4:01:05');
    expect(podMac(undefined, 'c', 'eth0')).toMatch(/^02(:[0-9a-f]{2}){5}$/);
  });
});

describe('wire frames', () => {
  it('reassembles a frame split at every byte, and rejects oversized ones early', () => {
    const frame = encodeFrame({ env: { CNI_COMMAND: 'ADD' }, stdin: 'ü'.repeat(100) });
    const reader = new FrameReader();
    let body: Buffer | undefined;
    for (const byte of frame) body = reader.push(Buffer.of(byte)) ?? body;
    expect(JSON.parse(body!.toString())).toEqual({ env: { CNI_COMMAND: 'ADD' }, stdin: 'ü'.repeat(100) });
    const big = Buffer.alloc(4);
    big.writeUInt32BE(10_000_000);
    expect(() => new FrameReader(1024).push(big)).toThrow(/limit/);
  });
});
