// A remapping NAT (edge-a: endpoint-independent, but another public port than the node's
// own) facing a port-preserving one (edge-b): without reflection edge-a's nodes offered
// `<public IP>:<own port>`, a port their router never uses, and the pairs stayed relayed.
// With two public reflectors (cloud-1, the relay, and cloud-2) every node learns its mapping
// and its NAT kind, offers the mapping, and every edge-a ↔ edge-b pair ends udp-punched.
// Then a binding request from a stranger (not a member, no session) gets no answer and is
// counted by the socket.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, labUp } from '../../lab/lab.ts';
import { crossSitePairs, measureTimeToDirect } from '../../lab/time-to-direct.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

const DIRECT_WITHIN_MS = 20_000;

function metric(text: string, name: string, labels = ''): number {
  let sum = 0;
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\d+(?:\\.\\d+)?)$`, 'gm');
  for (const m of text.matchAll(re)) if ((m[1] ?? '').includes(labels)) sum += Number(m[2]);
  return sum;
}

describe('lab up --nat edge-a=remap (edge-b masquerade)', () => {
  let before: HostSnapshot;
  let lab: Lab | undefined;

  beforeAll(async () => {
    before = await snapshotHost();
    lab = await labUp({
      overrides: { nodesPerSite: 2, podsPerNode: 1, nat: { 'edge-a': 'remap' } },
      progress: (l) => console.log(l),
    });
  }, 240_000);

  afterAll(async () => {
    await lab?.down();
  }, 120_000);

  it('every node knows its NAT kind: cloud none, edge-a and edge-b endpoint-independent', async () => {
    const expected: Record<string, string> = {
      cloud: 'none',
      'edge-a': 'endpoint-independent',
      'edge-b': 'endpoint-independent',
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

  it('every edge-a ↔ edge-b node pair ends udp-punched', async () => {
    const pairs = crossSitePairs(lab!, 'edge-a', 'edge-b');
    const results = await measureTimeToDirect(lab!, pairs, { timeoutMs: DIRECT_WITHIN_MS });
    // Direct may first show as a TCP hole punch: wait for the UDP session to take over.
    const deadline = Date.now() + 15_000;
    let paths: string[] = [];
    for (;;) {
      paths = await Promise.all(
        pairs.map(async (p) => (await lab!.agentStatus(p.from)).peers.find((x) => x.node === p.to)?.path ?? 'none'),
      );
      if (paths.every((p) => p === 'udp-punched') || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const times = results.map((r) => r.msToDirect);
    console.log(
      `remap ↔ masquerade: ${pairs.map((p, i) => `${p.from}→${p.to} ${times[i] ?? 'never'} ms (${paths[i]})`).join(', ')}`,
    );
    expect(paths).toEqual(pairs.map(() => 'udp-punched'));
    // The mapping edge-a's router chose is what edge-b's nodes send to: another port than the node's own.
    const status = await lab!.agentStatus('edge-b-1');
    const toA = status.peers.find((p) => p.node === 'edge-a-1') as { endpoint?: string } | undefined;
    const aPort = Number(
      (
        JSON.parse(await lab!.kubectl(['get', 'node', 'edge-a-1', '-o', 'jsonpath={.metadata.annotations}'])) as Record<
          string,
          string
        >
      )['edgemesh.io/punch-port'],
    );
    expect(toA?.endpoint).toMatch(/^udp:\/\/203\.0\.113\.101:\d+$/);
    expect(Number(toA!.endpoint!.split(':').at(-1))).not.toBe(aPort);
  });

  it("a stranger's binding request at a reflector's UDP port gets no answer and is counted", async () => {
    const node = await lab!.kubectl(['get', 'node', 'cloud-1', '-o', 'jsonpath={.metadata.annotations}']);
    const port = Number((JSON.parse(node) as Record<string, string>)['edgemesh.io/punch-port']);
    expect(port).toBeGreaterThan(0);
    const target = lab!.node('cloud-1').publicIp!;
    const metricsBefore = await lab!.exec('cloud-1', ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    // 50 binding requests as a member would send them (control type, an index, a counter, the
    // request's bytes where the ciphertext goes), but with no session: then listen 2 s.
    const script = `
      const s = require('node:dgram').createSocket('udp4');
      const { randomBytes } = require('node:crypto');
      let answers = 0;
      s.on('message', () => answers++);
      s.bind(0, () => {
        for (let i = 0; i < 50; i++) {
          const d = Buffer.alloc(16 + 12 + 16);
          d[0] = 5;
          randomBytes(4).copy(d, 4);
          d.writeBigUInt64LE(BigInt(i), 8);
          Buffer.from([0x45, 0x4d, 1, 5]).copy(d, 16);
          randomBytes(8).copy(d, 20);
          s.send(d, ${port}, '${target}');
        }
        setTimeout(() => { console.log(answers); s.close(); }, 2000);
      });`;
    const out = await lab!.exec('inet', [process.execPath, '-e', script]);
    expect(Number(out.trim())).toBe(0);
    const metricsAfter = await lab!.exec('cloud-1', ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    const dropped = (t: string) => metric(t, 'edgemesh_dataplane_drops_total', 'reason="udp-unknown-index"');
    expect(dropped(metricsAfter) - dropped(metricsBefore)).toBeGreaterThanOrEqual(50);
    // The reflector did answer its members (cloud-1 is the relay: every edge node asks it).
    expect(metric(metricsAfter, 'edgemesh_udp_reflection_total', 'event="answered"')).toBeGreaterThan(0);
    expect(metricsAfter).toMatch(/^edgemesh_nat_kind\{kind="none"\} 1$/m);
  });

  it('takes everything down', async () => {
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    await lab!.down();
    lab = undefined;
    expectNothingLeft(before, await snapshotHost(), marks);
  });
});
