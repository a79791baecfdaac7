// A site whose router drops every UDP datagram between its LAN and the internet: its nodes
// find no answer to their UDP probes, fall back to the libp2p stream tunnel by themselves
// (direct to the cloud, TCP hole-punched or relayed to the other edge) and stay reachable;
// the other sites keep their UDP sessions; the path changes are counted. Then random
// datagrams thrown at a public agent's UDP port are dropped and counted, and every agent
// stays up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, labUp } from '../../lab/lab.ts';
import { formatMatrix, runMatrix } from '../../lab/matrix.ts';
import { pingFrom } from '../../lab/network.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

const STREAM_PATHS = ['direct', 'hole-punched', 'relayed'];

function metric(text: string, name: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?)$`, 'gm'))) sum += Number(m[1]);
  return sum;
}

describe('lab up --nat edge-b=udp-blocked', () => {
  let before: HostSnapshot;
  let lab: Lab | undefined;

  beforeAll(async () => {
    before = await snapshotHost();
    lab = await labUp({
      overrides: { nodesPerSite: 1, podsPerNode: 1, nat: { 'edge-b': 'udp-blocked' } },
      progress: (l) => console.log(l),
    });
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('reaches every pod; edge-b ends on the stream tunnel by itself, the others on UDP', async () => {
    const result = await runMatrix(lab!);
    console.log(formatMatrix(result));
    expect(result.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.to}`)).toEqual([]);
    // Let the UDP probes run out (they give up within seconds), with traffic flowing.
    const deadline = Date.now() + 30_000;
    let paths: Record<string, string> = {};
    for (;;) {
      await runMatrix(lab!);
      paths = {};
      for (const n of lab!.nodes) {
        for (const p of (await lab!.agentStatus(n.name)).peers) paths[`${n.name}→${p.node}`] = p.path;
      }
      const settled =
        STREAM_PATHS.includes(paths['edge-b-1→cloud-1']!) &&
        STREAM_PATHS.includes(paths['edge-a-1→edge-b-1']!) &&
        paths['edge-a-1→cloud-1'] === 'udp-direct';
      if (settled || Date.now() > deadline) break;
    }
    expect(paths['edge-b-1→cloud-1'], JSON.stringify(paths)).toBe('direct');
    expect(paths['cloud-1→edge-b-1'], JSON.stringify(paths)).toBe('direct');
    expect(STREAM_PATHS, JSON.stringify(paths)).toContain(paths['edge-a-1→edge-b-1']);
    expect(STREAM_PATHS, JSON.stringify(paths)).toContain(paths['edge-b-1→edge-a-1']);
    expect(paths['edge-a-1→cloud-1'], JSON.stringify(paths)).toBe('udp-direct');
    // The router really dropped UDP: its FORWARD chain counted packets.
    const rules = await lab!.exec(lab!.network.routers.find((r) => r.site === 'edge-b')!.netnsSuffix, [
      'iptables',
      '-L',
      'FORWARD',
      '-v',
      '-n',
      '-x',
    ]);
    expect(rules).toMatch(/^\s*[1-9]\d*\s+\d+\s+DROP\s+17\b/m);
  });

  it('stays reachable over the stream path, and the agents count their path changes', async () => {
    const a = lab!.pods.find((p) => p.node === 'edge-a-1')!;
    const b = lab!.pods.find((p) => p.node === 'edge-b-1')!;
    const c = lab!.pods.find((p) => p.node === 'cloud-1')!;
    let replies = 0;
    for (let i = 0; i < 10; i++) {
      if ((await pingFrom(a.netns, b.ips[0]!, 2)) !== null) replies++;
      if ((await pingFrom(c.netns, b.ips[0]!, 2)) !== null) replies++;
    }
    expect(replies).toBeGreaterThanOrEqual(19);
    const metrics = await lab!.exec('edge-b-1', ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    expect(metrics).toMatch(/^edgemesh_peer_path\{peer="cloud-1",path="direct"\} 1$/m);
    expect(metric(metrics, 'edgemesh_path_changes_total'), 'edge-b-1 path changes').toBeGreaterThan(0);
  });

  it("drops and counts random datagrams thrown at a public agent's UDP port; every agent stays up", async () => {
    const node = await lab!.kubectl(['get', 'node', 'cloud-1', '-o', 'jsonpath={.metadata.annotations}']);
    const port = Number((JSON.parse(node) as Record<string, string>)['edgemesh.io/punch-port']);
    expect(port).toBeGreaterThan(0);
    const target = lab!.node('cloud-1').publicIp!;
    // 3,000 datagrams of random length and content, plus some with a plausible header
    // (data/control type byte, an index, a counter), from the internet namespace.
    const script = `
      const s = require('node:dgram').createSocket('udp4');
      const { randomBytes } = require('node:crypto');
      let left = 3000;
      const next = () => {
        if (left-- === 0) return s.close();
        const d = randomBytes(1 + Math.floor(Math.random() * 1500));
        if (left % 3 === 0 && d.length >= 16) { d[0] = left % 2 ? 4 : 5; d[1] = d[2] = d[3] = 0; }
        s.send(d, ${port}, '${target}', next);
      };
      next();`;
    await lab!.exec('inet', [process.execPath, '-e', script]);
    expect(await lab!.deadAgents()).toEqual([]);
    const metrics = await lab!.exec('cloud-1', ['curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    const refused = [...metrics.matchAll(/^edgemesh_dataplane_drops_total\{reason="udp-[^"]+"\} (\d+)$/gm)].reduce(
      (n, m) => n + Number(m[1]),
      0,
    );
    expect(refused, 'random datagrams dropped by the UDP socket').toBeGreaterThanOrEqual(2000);
    // And the agent still forwards.
    const c = lab!.pods.find((p) => p.node === 'cloud-1')!;
    const a = lab!.pods.find((p) => p.node === 'edge-a-1')!;
    expect(await pingFrom(a.netns, c.ips[0]!, 3)).not.toBeNull();
  });

  it('takes everything down', async () => {
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    await lab!.down();
    lab = undefined;
    expectNothingLeft(before, await snapshotHost(), marks);
  });
});
