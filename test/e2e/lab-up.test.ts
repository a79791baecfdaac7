// The whole lab through the library: lab up → every pod reaches every other pod by Pod IP
// over the path its pair should take (docs/architecture.md, "The path ladder") → lab down leaves nothing behind.
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_BUNDLE_PATH } from '../../bin/agent-bundle.js';
import { type Lab, labUp } from '../../lab/lab.ts';
import { formatMatrix, type MatrixResult, runMatrix } from '../../lab/matrix.ts';
import { pingFrom } from '../../lab/network.ts';
import { REPO_ROOT } from '../../lab/state.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

describe('lab up (built-in topology)', () => {
  let before: HostSnapshot;
  let lab: Lab | undefined;
  let matrix: MatrixResult;

  beforeAll(async () => {
    before = await snapshotHost();
    lab = await labUp({ progress: (l) => console.log(l) });
    matrix = await runMatrix(lab);
    console.log(formatMatrix(matrix));
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('registers every Node with its site, and the relay label on the relay', async () => {
    const nodes = JSON.parse(await lab!.kubectl(['get', 'nodes', '-o', 'json'])) as {
      items: Array<{
        metadata: { name: string; labels: Record<string, string>; annotations?: Record<string, string> };
      }>;
    };
    expect(nodes.items.map((n) => n.metadata.name).sort()).toEqual(lab!.nodes.map((n) => n.name).sort());
    for (const n of nodes.items) {
      expect(n.metadata.labels['edgemesh.io/site']).toBe(lab!.node(n.metadata.name).site);
      // The agent published itself on its Node.
      expect(n.metadata.annotations?.['edgemesh.io/peer-id']).toMatch(/^12D3KooW/);
    }
    expect(
      nodes.items.filter((n) => n.metadata.labels['edgemesh.io/relay'] === 'true').map((n) => n.metadata.name),
    ).toEqual(['cloud-1']);
  });

  it('runs every agent as deployed, from its bundle', async () => {
    for (const node of lab!.nodes) {
      const starting = (await readFile(node.logPath, 'utf8')).split('\n').find((l) => l.includes('agent starting'));
      expect(starting, node.name).toBeDefined();
      expect((JSON.parse(starting!) as { code: string }).code).toBe(join(REPO_ROOT, AGENT_BUNDLE_PATH));
    }
  });

  it('created every pod through the CNI client, with a cluster IP and a runtime-style cache entry', async () => {
    expect(lab!.pods).toHaveLength(12);
    const ips = lab!.pods.flatMap((p) => p.ips);
    expect(new Set(ips).size).toBe(12);
    for (const p of lab!.pods) {
      expect(p.ips[0]).toMatch(/^10\.244\.\d+\.\d+$/);
      await access(join(lab!.dir, 'cni-cache', `${p.containerId}.json`));
      // The address really is on the pod's eth0.
      expect(await lab!.exec(p.name, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).toContain(`${p.ips[0]}/`);
    }
  });

  it('reaches every pod from every node by Pod IP, over the expected path', () => {
    expect(matrix.entries.length).toBe(6 * 5 + 6);
    expect(matrix.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.to}`)).toEqual([]);
    for (const e of matrix.entries) {
      const where = `${e.from}→${e.to}`;
      if (e.fromNode === e.toNode) expect(e.path, where).toBe('local');
      else if (e.fromSite === e.toSite) expect(e.path, where).toBe('host-gw');
      // The UDP session comes up within a second of the first packet; the stream tunnel
      // carries what goes before it (and a UDP relay, if a slow punch outlasted the probe burst).
      else if (e.fromSite === 'cloud' || e.toSite === 'cloud')
        expect(['udp-direct', 'direct'], where).toContain(e.path);
      else expect(['udp-punched', 'udp-relayed', 'hole-punched', 'relayed'], where).toContain(e.path);
    }
  });

  it('settles every cross-site pair on a UDP session: direct to the cloud, hole-punched edge ↔ edge', async () => {
    const want = (from: string, to: string) =>
      lab!.node(from).site === 'cloud' || lab!.node(to).site === 'cloud' ? 'udp-direct' : 'udp-punched';
    const wrong = async () => {
      const out: string[] = [];
      for (const n of lab!.nodes) {
        for (const p of (await lab!.agentStatus(n.name)).peers) {
          if (lab!.node(p.node).site !== n.site && p.path !== want(n.name, p.node))
            out.push(`${n.name}→${p.node}: ${p.path}`);
        }
      }
      return out;
    };
    const deadline = Date.now() + 30_000;
    let left = await wrong();
    while (left.length > 0 && Date.now() < deadline) {
      await runMatrix(lab!); // traffic keeps the sessions wanted
      left = await wrong();
    }
    expect(left).toEqual([]);
  });

  it('restarts a killed agent with the lab helpers, and its pods stay reachable', async () => {
    const before = lab!.agentProcess('edge-b-2')!;
    await lab!.killAgent('edge-b-2');
    expect(await lab!.deadAgents()).toEqual(['edge-b-2']);
    const restarted = await lab!.startAgent('edge-b-2');
    expect(restarted.pid).not.toBe(before.pid);
    const status = await lab!.waitAgentReady('edge-b-2', 90_000);
    expect(status.podCidrs).toEqual(
      (await lab!.agentStatus('edge-b-1')).peers.find((p) => p.node === 'edge-b-2')?.podCidrs,
    );
    expect(await lab!.deadAgents()).toEqual([]);
    const target = lab!.pods.find((p) => p.node === 'edge-b-2')!.ips[0]!;
    const from = lab!.pods.find((p) => p.node === 'edge-a-1')!.netns;
    let rtt: number | null = null;
    for (let i = 0; i < 20 && rtt === null; i++) rtt = await pingFrom(from, target, 1);
    expect(rtt, 'edge-a-1 pod → edge-b-2 pod after the restart').not.toBeNull();
  });

  it('takes everything down: root namespace, firewall and processes are as before', async () => {
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    const report = await lab!.down();
    lab = undefined;
    expect(report.pods).toBe(12);
    await expect(access(marks.dir)).rejects.toThrow();
    expectNothingLeft(before, await snapshotHost(), marks);
  });
});
