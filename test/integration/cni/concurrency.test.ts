// 50 pods added at once through the C client get 50 distinct addresses; 50 concurrent DELs
// then leave no lease (read back from the store on disk), no veth and no iptables rule.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { gateway } from '../../../ipam/cidr.ts';
import { LeaseStore } from '../../../ipam/lease-store.ts';
import { type Attachment, type CniNode, links, nsName, ping, startCniNode } from './harness.ts';

const PODS = 50;

describe('50 concurrent ADDs and DELs through the C client', () => {
  let node: CniNode;
  let pods: Attachment[] = [];
  beforeAll(async () => {
    node = await startCniNode({ clusterCidrs: ['10.244.0.0/16', 'fd00:10:244::/48'] });
    pods = [];
    for (let i = 0; i < PODS; i++) pods.push(await node.pod(`c${i}`));
  });
  afterAll(async () => {
    await node?.cleanup();
  });

  it('gives unique IPs, and leaves nothing behind after the DELs', async () => {
    const conf = node.conf('1.0.0');
    const rulesBefore = await run('ip', ['netns', 'exec', node.node, 'iptables-save', '-t', 'nat']);
    const adds = await Promise.all(pods.map((p) => node.client('ADD', p, conf)));
    for (const r of adds) expect(r.code, r.stdout).toBe(0);
    const ips = adds.flatMap((r) => (r.json as { ips: { address: string }[] }).ips.map((ip) => ip.address));
    expect(ips).toHaveLength(PODS * 2);
    expect(new Set(ips).size).toBe(PODS * 2);
    expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toHaveLength(PODS);
    // The first and last pod really talk to each other.
    const last = (adds[PODS - 1]!.json as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    expect(await ping(pods[0]!.netns, last)).toBe(true);

    const dels = await Promise.all(pods.map((p) => node.client('DEL', p, conf)));
    for (const r of dels) expect(r.code, r.stdout).toBe(0);
    expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toEqual([]);
    for (const p of pods) expect(await links(nsName(p.netns))).toEqual(['lo']);
    const rulesAfter = await run('ip', ['netns', 'exec', node.node, 'iptables-save', '-t', 'nat']);
    const rules = (s: string) => s.split('\n').filter((l) => l.startsWith('-'));
    expect(rules(rulesAfter)).toEqual(rules(rulesBefore));

    // The lease store on disk holds nothing: reopen it after the server has let go of it.
    await node.stopServer();
    const blocks = [
      { family: 4 as const, cidr: node.v4Block, gateway: gateway(node.v4Block) },
      { family: 6 as const, cidr: node.v6Block, gateway: gateway(node.v6Block) },
    ];
    const store = await LeaseStore.open({ dir: join(node.stateDir, 'ipam'), blocks });
    try {
      expect(store.list()).toEqual([]);
    } finally {
      await store.close();
    }
  });
});
