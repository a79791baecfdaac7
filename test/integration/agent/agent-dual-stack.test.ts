// Dual-stack: every pod gets an IPv4 and an IPv6 address; IPv6 pod traffic takes the same
// paths as IPv4 — host-gw via the peer's IPv6 InternalIP within a site, the TUN and a
// libp2p tunnel across sites.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentCluster, type TestNode, type TestPod } from './harness.ts';

for (const mode of ['host-gw', 'tunnel'] as const) {
  describe(`agent: dual-stack, ${mode}`, () => {
    const cluster = new AgentCluster();
    let a: TestNode;
    let b: TestNode;
    let p1: TestPod;
    let p2: TestPod;

    beforeAll(async () => {
      await cluster.up(
        mode === 'host-gw'
          ? { sites: ['lan', 'lan'], subnet: '192.168.77', dualStack: true }
          : { sites: ['site-a', 'site-b'], subnet: '203.0.113', dualStack: true },
      );
      [a, b] = cluster.nodes as [TestNode, TestNode];
      await Promise.all([cluster.startAgent(a), cluster.startAgent(b)]);
      p1 = await cluster.addPod(a, 'p1');
      p2 = await cluster.addPod(b, 'p2');
    }, 180_000);

    afterAll(async () => {
      await cluster.cleanup();
    }, 60_000);

    it('claims a block per family and gives each pod one address of each', async () => {
      const status = await cluster.status(a);
      expect(status.podCidrs).toHaveLength(2);
      expect(status.podCidrs[1]).toMatch(/^fd00:99:.*\/112$/);
      expect(p1.ips).toHaveLength(2);
      expect(p1.ips[1]).toContain(':');
    });

    it(`routes the IPv6 cluster CIDR like the IPv4 one (${mode})`, async () => {
      const v6 = await cluster.podRoutesV6(a);
      const statusA = await cluster.status(a);
      const statusB = await cluster.status(b);
      const gateway6 = p1.ips[1]!.replace(/:[0-9a-f]+$/, ':1');
      expect(v6.some((r) => r.startsWith('fd00:99::/56 dev edgemesh0') && r.includes(`src ${gateway6}`))).toBe(true);
      const peerBlock6 = statusB.podCidrs[1]!;
      const hostGw = v6.find((r) => r.startsWith(peerBlock6));
      if (mode === 'host-gw') expect(hostGw).toContain(`via ${b.ipv6}`);
      else expect(hostGw).toBeUndefined();
      expect(statusA.peers[0]!.podCidrs).toEqual(statusB.podCidrs);
    });

    it('pods reach each other by IPv4 and by IPv6 Pod IP', async () => {
      expect(await cluster.ping(p1, p2.ips[0]!)).toBe(true);
      expect(await cluster.ping(p1, p2.ips[1]!, 3)).toBe(true);
      expect(await cluster.ping(p2, p1.ips[1]!)).toBe(true);
      const peer = (await cluster.status(a)).peers[0]!;
      // Between public nodes: a UDP session once it answered, the direct stream tunnel before.
      if (mode === 'host-gw') expect(peer.path).toBe('host-gw');
      else expect(peer.path).toMatch(/^(udp-)?direct$/);
      if (mode === 'tunnel') expect(peer.txPackets).toBeGreaterThanOrEqual(5);
      else expect(peer.txPackets).toBe(0);
    });
  });
}
