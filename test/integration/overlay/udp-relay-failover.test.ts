// Two UDP relays, two sites behind symmetric NATs (no punch can work): the pair's session runs
// through one relay's UDP relay, both members being registered with both relays. When the
// relay in use dies (its agent killed: the relay thread goes with it), the members move to
// the other relay as soon as the one in use has been silent for a moment, while the other
// still answers: the pair stays udp-relayed and keeps delivering. The agents are the
// product as deployed (the lab's).
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, labUp } from '../../../lab/lab.ts';
import { pingFrom } from '../../../lab/network.ts';
import { resolveTopology } from '../../../lab/topology.ts';

const topology = () =>
  resolveTopology({
    nodesPerSite: 1,
    podsPerNode: 1,
    sites: [
      { name: 'cloud', tag: 'c', kind: 'public', nodes: 2, relays: 2, firstPublicIp: '203.0.113.10' },
      { name: 'edge-a', tag: 'a', kind: 'nat', lan: '192.168.10.0/24', wanIp: '203.0.113.101', symmetricNat: true },
      { name: 'edge-s', tag: 's', kind: 'nat', lan: '192.168.30.0/24', wanIp: '203.0.113.103', symmetricNat: true },
    ],
  });

describe('UDP relay failover between two relays (lab, symmetric NATs)', () => {
  let lab: Lab | undefined;

  beforeAll(async () => {
    lab = await labUp({ topology: topology(), progress: (l) => console.log(l) });
  }, 240_000);

  afterAll(async () => {
    await lab?.down();
  }, 60_000);

  const peerOf = async (from: string, to: string) => (await lab!.agentStatus(from)).peers.find((p) => p.node === to);

  it('moves the pair to the other relay when the one in use dies, without leaving udp-relayed', async () => {
    const a = lab!.pods.find((p) => p.node === 'edge-a-1')!;
    const s = lab!.pods.find((p) => p.node === 'edge-s-1')!;
    const relays = lab!.nodes.filter((n) => n.relay && n.publicIp);
    expect(relays).toHaveLength(2);
    const deadline = Date.now() + 60_000;
    while ((await peerOf('edge-a-1', 'edge-s-1'))?.path !== 'udp-relayed' && Date.now() < deadline)
      await pingFrom(a.netns, s.ips[0]!, 1);
    const before = await peerOf('edge-a-1', 'edge-s-1');
    expect(before?.path).toBe('udp-relayed');
    const inUse = relays.find((r) => before?.endpoint?.startsWith(`udp://${r.publicIp}:`));
    const other = relays.find((r) => r !== inUse)!;
    expect(inUse, `endpoint ${before?.endpoint} is one of the relays`).toBeDefined();

    await lab!.killAgent(inUse!.name);
    const killedAt = Date.now();
    // Traffic keeps the session wanted while the members notice.
    let moved: number | undefined;
    let lastPeer = before;
    const seen = new Set<string>();
    while (Date.now() - killedAt < 30_000) {
      await pingFrom(a.netns, s.ips[0]!, 1);
      lastPeer = await peerOf('edge-a-1', 'edge-s-1');
      seen.add(lastPeer?.path ?? 'none');
      if (lastPeer?.endpoint?.startsWith(`udp://${other.publicIp}:`) && lastPeer.path === 'udp-relayed') {
        moved = Date.now() - killedAt;
        break;
      }
    }
    console.log(`relay ${inUse!.name} killed: edge-a-1 on ${other.name} after ${moved} ms; paths seen: ${[...seen]}`);
    expect(moved, `edge-a-1 → edge-s-1 ended ${lastPeer?.path} ${lastPeer?.endpoint}`).toBeDefined();
    // The liveness rule alone would give up on the dead relay only after 5 s and go through
    // the stream fallback; the failover moves before that.
    expect(moved!).toBeLessThan(10_000);
    // It was the relay rung's failover (a silent relay), not the path dying and starting over.
    const log = readFileSync(lab!.node('edge-a-1').logPath, 'utf8');
    expect(log).toContain('UDP relay silent: moving to another relay');
    // The other member moves on its own probes (it only answers the pings): also within 10 s.
    const onOther = new RegExp(`^udp://${other.publicIp!.replaceAll('.', '\\.')}:\\d+$`);
    let back = await peerOf('edge-s-1', 'edge-a-1');
    while (!(back?.path === 'udp-relayed' && onOther.test(back.endpoint ?? '')) && Date.now() - killedAt < 10_000) {
      await new Promise((r) => setTimeout(r, 200));
      back = await peerOf('edge-s-1', 'edge-a-1');
    }
    console.log(`edge-s-1 → edge-a-1 ${back?.path} ${back?.endpoint} ${Date.now() - killedAt} ms after the kill`);
    expect(back?.path).toBe('udp-relayed');
    expect(back?.endpoint).toMatch(onOther);
    let replies = 0;
    for (let i = 0; i < 10; i++) if ((await pingFrom(a.netns, s.ips[0]!, 1)) !== null) replies++;
    expect(replies).toBeGreaterThanOrEqual(9);
    // The surviving relay forwarded the pair's datagrams.
    const metrics = await lab!.exec(other.name, ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    const forwarded = /^edgemesh_udp_relay_forwarded_datagrams_total (\d+)/m.exec(metrics)?.[1];
    expect(Number(forwarded ?? 0)).toBeGreaterThan(10);
  }, 120_000);
});
