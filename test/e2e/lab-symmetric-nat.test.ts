// With symmetric NATs (MASQUERADE --random-fully) hole punching cannot work: edge-a ↔ edge-b
// settle on a UDP session through the cloud relay's UDP relay (udp-relayed: sealed datagrams
// forwarded unopened) — and work — while cloud ↔ edge stays direct.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, labUp } from '../../lab/lab.ts';
import { formatMatrix, type MatrixResult, runMatrix } from '../../lab/matrix.ts';
import { pingFrom } from '../../lab/network.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

describe('lab up --symmetric-nat', () => {
  let before: HostSnapshot;
  let lab: Lab | undefined;

  beforeAll(async () => {
    before = await snapshotHost();
    lab = await labUp({
      overrides: { nodesPerSite: 1, podsPerNode: 1, symmetricNat: true },
      progress: (l) => console.log(l),
    });
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('configures --random-fully on every NAT router', async () => {
    for (const r of lab!.network.routers) {
      expect(await lab!.exec(r.netnsSuffix, ['iptables-save', '-t', 'nat'])).toContain('MASQUERADE --random-fully');
    }
  });

  it('reaches every pod, and settles edge-a ↔ edge-b on udp-relayed', async () => {
    const edgeToEdge = (r: MatrixResult) =>
      r.entries.filter((e) => e.fromSite.startsWith('edge') && e.toSite.startsWith('edge'));
    let result = await runMatrix(lab!);
    console.log(formatMatrix(result));
    expect(result.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.to}`)).toEqual([]);
    expect(edgeToEdge(result)).toHaveLength(2);
    // The stream relay carries the first packets while the UDP candidates are probed (5 s)
    // and the relay binding is set up; traffic keeps the session wanted.
    const deadline = Date.now() + 45_000;
    while (edgeToEdge(result).some((e) => e.path !== 'udp-relayed') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1000));
      result = await runMatrix(lab!);
    }
    console.log(formatMatrix(result));
    expect(result.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.to}`)).toEqual([]);
    for (const e of edgeToEdge(result)) expect(e.path, `${e.from}→${e.to}`).toBe('udp-relayed');
  });

  it('stays udp-relayed through the relay node and keeps working; no hole punch succeeds', async () => {
    const a = lab!.pods.find((p) => p.node === 'edge-a-1')!;
    const b = lab!.pods.find((p) => p.node === 'edge-b-1')!;
    let replies = 0;
    for (let i = 0; i < 10; i++) {
      if ((await pingFrom(a.netns, b.ips[0]!, 2)) !== null) replies++;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(replies).toBeGreaterThanOrEqual(9);
    const status = await lab!.agentStatus('edge-a-1');
    const peer = status.peers.find((p) => p.node === 'edge-b-1');
    expect(peer?.path).toBe('udp-relayed');
    // The session's endpoint is the relay node's UDP relay (its public IP), not edge-b's NAT.
    const relay = lab!.nodes.find((n) => n.relay && n.publicIp)!;
    expect(peer?.endpoint).toMatch(new RegExp(`^udp://${relay.publicIp!.replaceAll('.', '\\.')}:\\d+$`));
    // The relay node forwarded the pair's datagrams, and says so in its metrics.
    const relayMetrics = await lab!.exec(relay.name, ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    const forwarded = /^edgemesh_udp_relay_forwarded_datagrams_total (\d+)/m.exec(relayMetrics)?.[1];
    expect(Number(forwarded ?? 0), 'datagrams the relay forwarded').toBeGreaterThan(10);
    expect(relayMetrics).toMatch(/^edgemesh_udp_relay_bindings 1$/m);
    for (const node of ['edge-a-1', 'edge-b-1']) {
      const metrics = await lab!.exec(node, ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
      const success = /^edgemesh_holepunch_results_total\{result="success"\} (\d+)/m.exec(metrics)?.[1];
      expect(Number(success ?? 0), `${node}: hole punches that succeeded`).toBe(0);
    }
  });

  it('takes everything down', async () => {
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    await lab!.down();
    lab = undefined;
    expectNothingLeft(before, await snapshotHost(), marks);
  });
});
