import { describe, expect, it } from 'vitest';
import { canonicalDst, hostGwRoutes, tunRoutes } from '../../../agent/host-routes.ts';

describe('desired pod routes', () => {
  const blocks = [
    { family: 4 as const, cidr: '10.244.1.0/24', gateway: '10.244.1.1' },
    { family: 6 as const, cidr: 'fd00:10:244:1::/64', gateway: 'fd00:10:244:1::1' },
  ];

  it('routes each cluster CIDR into the TUN with the gateway of its family as source', () => {
    expect(tunRoutes(['10.244.0.0/16', 'fd00:10:244::/56'], blocks, 'edgemesh0')).toEqual([
      { dst: '10.244.0.0/16', dev: 'edgemesh0', src: '10.244.1.1' },
      { dst: 'fd00:10:244::/56', dev: 'edgemesh0', src: 'fd00:10:244:1::1' },
    ]);
    // A family without a local block gets no TUN route (no valid source address).
    expect(tunRoutes(['10.244.0.0/16', 'fd00:10:244::/56'], blocks.slice(0, 1), 'tun0')).toHaveLength(1);
  });

  it('routes same-site peers via their address of the pod CIDR family, only over a direct neighbour', () => {
    const routes = hostGwRoutes(
      [
        { node: 'a2', nextHops: ['192.168.10.12', 'fd00:10::12'], podCidrs: ['10.244.2.0/24', 'fd00:10:244:2::/64'] },
        { node: 'a3', nextHops: ['192.168.99.3'], podCidrs: ['10.244.3.0/24'] },
        { node: 'a4', nextHops: ['192.168.10.14'], podCidrs: ['10.244.4.0/24', 'fd00:10:244:4::/64'] },
      ],
      (ip) => (ip.startsWith('192.168.10.') || ip.startsWith('fd00:10::') ? 'eth0' : undefined),
      ['10.244.0.0/16', 'fd00:10:244::/56'],
    );
    expect(routes).toEqual([
      { dst: '10.244.2.0/24', dev: 'eth0', via: '192.168.10.12' },
      { dst: 'fd00:10:244:2::/64', dev: 'eth0', via: 'fd00:10::12' },
      // Not on our LAN (behind a router): no host-gw route.
      // a4 has no IPv6 address: its IPv6 block gets no host-gw route.
      { dst: '10.244.4.0/24', dev: 'eth0', via: '192.168.10.14' },
    ]);
  });

  it('never turns a CIDR outside the cluster CIDRs into a kernel route, whatever a peer lists', () => {
    const routes = hostGwRoutes(
      [
        {
          node: 'a2',
          nextHops: ['192.168.10.12'],
          podCidrs: ['0.0.0.0/0', '192.168.10.0/24', '10.0.0.0/8', '10.244.2.0/24'],
        },
      ],
      () => 'eth0',
      ['10.244.0.0/16'],
    );
    expect(routes).toEqual([{ dst: '10.244.2.0/24', dev: 'eth0', via: '192.168.10.12' }]);
  });

  it('canonicalises host destinations as the kernel lists them', () => {
    expect(canonicalDst('10.244.1.7')).toBe('10.244.1.7/32');
    expect(canonicalDst('fd00::7')).toBe('fd00::7/128');
    expect(canonicalDst('10.244.0.0/16')).toBe('10.244.0.0/16');
    expect(canonicalDst('fd00:0010:0244:0000::/64')).toBe(canonicalDst('fd00:10:244::/64'));
  });
});
