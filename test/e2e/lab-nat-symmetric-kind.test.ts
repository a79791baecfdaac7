// Endpoint-dependent NATs on both edges (MASQUERADE --random-fully): the two public cloud
// nodes reflect different ports to each edge node, so every edge node classifies its NAT as
// endpoint-dependent and offers no reflected mapping; the edge-a ↔ edge-b pair goes to the
// UDP relay with its first session, the attempt counted as relayed (that the probing is bounded is
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

  it('edge-a ↔ edge-b cannot punch: the pair goes to the UDP relay at once, the attempt counted as relayed', async () => {
    const src = lab!.pods.find((p) => p.node === 'edge-a-1')!;
    const dst = lab!.pods.find((p) => p.node === 'edge-b-1')!;
    const started = Date.now();
    let replies = 0;
    let path: string | undefined;
    let onRelayAfter: number | undefined;
    while (Date.now() - started < 20_000 && !(Date.now() - started > 6000 && path === 'udp-relayed')) {
      if ((await pingFrom(src.netns, dst.ips[0]!, 1)) !== null) replies++;
      path = (await lab!.agentStatus('edge-a-1')).peers.find((p) => p.node === 'edge-b-1')?.path;
      if (path === 'udp-relayed') onRelayAfter ??= Date.now() - started;
    }
    console.log(`edge-a-1 → edge-b-1 on the UDP relay ${onRelayAfter} ms after the first ping`);
    expect(replies).toBeGreaterThan(0);
    expect(path).toBe('udp-relayed');
    // Both NATs endpoint-dependent: the relays are asked with the first session, not after
    // a whole unanswered probe burst (5 s).
    expect(onRelayAfter).toBeLessThan(5000);
    const metrics = await lab!.exec('edge-a-1', ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    expect(metric(metrics, 'edgemesh_udp_punch_results_total', 'result="relayed"')).toBeGreaterThanOrEqual(1);
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
