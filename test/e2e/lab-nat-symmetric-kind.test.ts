// Endpoint-dependent NATs on both edges (MASQUERADE --random-fully): the two public cloud
// nodes reflect different ports to each edge node, so every edge node classifies its NAT as
// endpoint-dependent and offers no reflected mapping; the edge-a ↔ edge-b pair stays
// relayed, and its UDP attempt ends counted as unanswered (that the probing is bounded is
// shown in test/integration/overlay/udp-symmetric-nat.test.ts). Birthday punching needs one
// side with a known mapping: with both sides endpoint-dependent it does not start (no probe
// storm, no extra sockets), and the sessions it skipped are counted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, labUp } from '../../lab/lab.ts';
import { birthdayMetrics } from '../../lab/nat-kinds.ts';
import { pingFrom } from '../../lab/network.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

function metric(text: string, name: string, labels = ''): number {
  let sum = 0;
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\d+(?:\\.\\d+)?)$`, 'gm');
  for (const m of text.matchAll(re)) if ((m[1] ?? '').includes(labels)) sum += Number(m[2]);
  return sum;
}

describe('lab up --nat symmetric (both edges endpoint-dependent)', () => {
  let before: HostSnapshot;
  let lab: Lab | undefined;

  beforeAll(async () => {
    before = await snapshotHost();
    lab = await labUp({
      overrides: { nodesPerSite: 2, podsPerNode: 1, nat: { 'edge-a': 'symmetric', 'edge-b': 'symmetric' } },
      progress: (l) => console.log(l),
    });
  }, 240_000);

  afterAll(async () => {
    await lab?.down();
  }, 120_000);

  it('every edge node finds its NAT endpoint-dependent, the cloud nodes none', async () => {
    const expected: Record<string, string> = {
      cloud: 'none',
      'edge-a': 'endpoint-dependent',
      'edge-b': 'endpoint-dependent',
    };
    const deadline = Date.now() + 30_000;
    let kinds: Record<string, string | undefined> = {};
    for (;;) {
      kinds = Object.fromEntries(
        await Promise.all(lab!.nodes.map(async (n) => [n.name, (await lab!.agentStatus(n.name)).natKind] as const)),
      );
      if (lab!.nodes.every((n) => kinds[n.name] === expected[n.site]) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(kinds).toEqual(Object.fromEntries(lab!.nodes.map((n) => [n.name, expected[n.site]])));
  });

  it('edge-a ↔ edge-b cannot punch: the direct UDP attempt is counted as unanswered, the pair ends on the UDP relay', async () => {
    const src = lab!.pods.find((p) => p.node === 'edge-a-1')!;
    const dst = lab!.pods.find((p) => p.node === 'edge-b-1')!;
    const started = Date.now();
    // Pings for longer than the fast probe burst (5 s), so the attempt is judged.
    let replies = 0;
    // Then the relay binding follows (the stream relay carries the traffic meanwhile).
    let path: string | undefined;
    while (Date.now() - started < 20_000 && !(Date.now() - started > 8000 && path === 'udp-relayed')) {
      if ((await pingFrom(src.netns, dst.ips[0]!, 1)) !== null) replies++;
      path = (await lab!.agentStatus('edge-a-1')).peers.find((p) => p.node === 'edge-b-1')?.path;
    }
    expect(replies).toBeGreaterThan(0);
    expect(path).toBe('udp-relayed');
    const metrics = await lab!.exec('edge-a-1', ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    expect(metric(metrics, 'edgemesh_udp_punch_results_total', 'result="unanswered"')).toBeGreaterThanOrEqual(1);
    expect(metric(metrics, 'edgemesh_udp_reflection_total', 'event="answers"')).toBeGreaterThanOrEqual(2);
    expect(metrics).toMatch(/^edgemesh_nat_kind\{kind="endpoint-dependent"\} 1$/m);
  });

  it('both sides endpoint-dependent: no birthday punching on any edge node, the skipped sessions counted', async () => {
    let bothHard = 0;
    for (const n of lab!.nodes.filter((x) => x.site !== 'cloud')) {
      const m = await birthdayMetrics(lab!, n.name);
      console.log(`${n.name}: ${JSON.stringify(m)}`);
      expect(m['attempts-hard'] ?? 0).toBe(0);
      expect(m['attempts-easy'] ?? 0).toBe(0);
      expect(m['probes-sent'] ?? 0).toBe(0);
      expect(m['sockets-opened'] ?? 0).toBe(0);
      bothHard += m['both-hard'] ?? 0;
    }
    // edge-a-1 ↔ edge-b-1 talked above: at least its two ends counted the pair.
    expect(bothHard).toBeGreaterThanOrEqual(2);
  });

  it('takes everything down', async () => {
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    await lab!.down();
    lab = undefined;
    expectNothingLeft(before, await snapshotHost(), marks);
  });
});
