// The agent in the lab (a cloud site with a relay, two edge sites behind NATs), driven
// only through agents, the CNI client and the API: nodes join; the full Pod-IP matrix
// holds; status and /metrics report the path each peer uses and it matches what the
// kernel shows (routes, TCP connections); a checksummed pod↔pod transfer across the two
// NATs survives `kill -9` of an agent with no lease lost or duplicated; deleting a Node
// removes its routes everywhere and frees its block.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../common/exec.ts';
import { cniAdd, resultAddresses } from '../../lab/cni-runtime.ts';
import { type Lab, type LabNode, type LabPod, labUp } from '../../lab/lab.ts';
import { formatMatrix, type MatrixResult, runMatrix } from '../../lab/matrix.ts';

const TRANSFER_PEER = join(import.meta.dirname, '..', 'integration', 'agent', 'transfer-peer.ts');

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out: ${what}${last ? ` (${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function startInPod(netns: string, args: string[]) {
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, TRANSFER_PEER, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', (d) => {
    err += d;
  });
  const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, out, err })),
  );
  return { child, done, output: () => out };
}

/** Established TCP connections of a namespace as "localIp:port remoteIp:port". */
async function tcpConnections(netns: string): Promise<Array<{ local: string; remote: string }>> {
  const out = await run('ip', ['netns', 'exec', netns, 'ss', '-tnH', 'state', 'established']);
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const cols = l.trim().split(/\s+/);
      return { local: cols[cols.length - 2]!, remote: cols[cols.length - 1]! };
    });
}

describe('agent in the lab: three sites, NATs, relay', () => {
  let lab: Lab | undefined;
  let matrix: MatrixResult;

  /** The address a node is reached at from the internet: its own, or its site router's. */
  const outsideIp = (n: LabNode) => n.publicIp ?? lab!.network.routers.find((r) => r.site === n.site)!.wanIp;

  beforeAll(async () => {
    lab = await labUp({ progress: (l) => console.log(l) });
    matrix = await runMatrix(lab);
    console.log(formatMatrix(matrix));
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('nodes join with unique blocks, pods come from the CNI client, and the full Pod-IP matrix holds', async () => {
    const statuses = await Promise.all(lab!.nodes.map((n) => lab!.agentStatus(n.name)));
    const blocks = statuses.flatMap((s) => s.podCidrs);
    expect(new Set(blocks).size).toBe(lab!.nodes.length);
    for (const s of statuses) {
      expect(s.ready).toBe(true);
      expect(s.peers.map((p) => p.node).sort()).toEqual(
        lab!.nodes
          .map((n) => n.name)
          .filter((n) => n !== s.node)
          .sort(),
      );
    }
    const sites = new Set(lab!.nodes.map((n) => n.site));
    expect(sites.size).toBe(3);
    expect(matrix.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.to}`)).toEqual([]);
    // Every ordered pair of sites was exercised.
    const pairs = new Set(matrix.entries.map((e) => `${e.fromSite}→${e.toSite}`));
    expect(pairs.size).toBe(9);
  });

  it('status and /metrics report the path of every peer, and it matches the routes and connections', async () => {
    // Fresh traffic between every pair of nodes, so on-demand tunnels are up while we look.
    for (const node of lab!.nodes) {
      for (const peerNode of lab!.nodes.filter((n) => n.name !== node.name)) {
        const pod = lab!.pods.find((p) => p.node === peerNode.name)!;
        await run('ip', ['netns', 'exec', node.netns, 'ping', '-c', '1', '-W', '3', pod.ips[0]!]).catch(() => '');
      }
    }
    for (const node of lab!.nodes) {
      const status = await lab!.agentStatus(node.name);
      const metrics = await run('ip', ['netns', 'exec', node.netns, 'curl', '-sf', 'http://127.0.0.1:9273/metrics']);
      const conns = await tcpConnections(node.netns);
      for (const peer of status.peers) {
        const peerNode = lab!.node(peer.node);
        const where = `${node.name} → ${peer.node}: ${peer.path}`;
        expect(metrics, where).toContain(`edgemesh_peer_path{peer="${peer.node}",path="${peer.path}"} 1`);
        const podIp = lab!.pods.find((p) => p.node === peer.node)!.ips[0]!;
        const route = await run('ip', ['-n', node.netns, 'route', 'get', podIp]);
        if (peerNode.site === node.site) {
          expect(peer.path, where).toBe('host-gw');
          expect(route, where).toContain(`via ${peerNode.ip} `);
          continue;
        }
        expect(route, where).toContain('dev edgemesh0');
        const toPeer = conns.filter((c) => c.remote.startsWith(`${outsideIp(peerNode)}:`));
        const crossesCloud = peerNode.site === 'cloud' || node.site === 'cloud';
        if (peer.path === 'udp-direct' || peer.path === 'udp-punched') {
          // A UDP session: its endpoint is the peer's outside address (its own, or its NAT's).
          expect(peer.path, where).toBe(crossesCloud ? 'udp-direct' : 'udp-punched');
          expect(peer.endpoint ?? '', where).toContain(outsideIp(peerNode));
        } else if (crossesCloud) {
          expect(peer.path, where).toBe('direct');
          // A connection between the two nodes' outside addresses carries it.
          const either = conns.some(
            (c) => c.remote.startsWith(`${outsideIp(peerNode)}:`) || c.remote.startsWith(`${peerNode.ip}:`),
          );
          expect(either, `${where}: no TCP connection to ${outsideIp(peerNode)} in ${JSON.stringify(conns)}`).toBe(
            true,
          );
        } else {
          expect(['relayed', 'hole-punched'], where).toContain(peer.path);
          const relay = lab!.nodes.find((n) => n.relay)!;
          if (peer.path === 'hole-punched') {
            // Through both NATs: a connection with the peer site's router address.
            expect(toPeer.length, `${where}: ${JSON.stringify(conns)}`).toBeGreaterThan(0);
          } else {
            expect(
              conns.some((c) => c.remote.startsWith(`${relay.publicIp}:`)),
              `${where}: no connection to the relay`,
            ).toBe(true);
          }
        }
      }
    }
  });

  it('a checksummed pod↔pod TCP transfer across both NATs survives kill -9 of an agent; no lease lost or duplicated', async () => {
    const from = lab!.pods.find((p) => lab!.node(p.node).site === 'edge-a')!;
    const to = lab!.pods.find((p) => lab!.node(p.node).site === 'edge-b')!;
    const victim = to.node;
    const ipsBefore = new Map(lab!.pods.map((p) => [p.name, p.ips.join(',')]));
    const cidrsBefore = (await lab!.agentStatus(victim)).podCidrs;
    const bytes = 8 * 1024 * 1024;
    const server = startInPod(to.netns, ['serve', '5301']);
    await waitFor('server listening', async () => (server.output().includes('listening') ? true : undefined));
    const sender = startInPod(from.netns, ['send', to.ips[0]!, '5301', String(bytes), '256']);
    await waitFor('traffic flowing', async () => {
      const peer = (await lab!.agentStatus(from.node)).peers.find((p) => p.node === victim);
      return (peer?.txBytes ?? 0) > 512 * 1024 ? true : undefined;
    });
    await lab!.killAgent(victim, 'SIGKILL');
    await lab!.startAgent(victim);
    await lab!.waitAgentReady(victim, 120_000);
    const [sent, received] = await Promise.all([sender.done, server.done]);
    expect(sent.code, sent.err).toBe(0);
    expect(received.code, received.err).toBe(0);
    const s = JSON.parse(sent.out.trim().split('\n').pop()!);
    expect(s.bytes).toBe(bytes);
    expect(JSON.parse(received.out.trim().split('\n').pop()!)).toEqual(s);
    // Same block, and every pod of the node keeps its IP: a repeated ADD of the same
    // attachment returns the address it had; IPAM counts exactly the node's pods.
    expect((await lab!.agentStatus(victim)).podCidrs).toEqual(cidrsBefore);
    const victimPods = lab!.pods.filter((p) => p.node === victim);
    const metrics = await run('ip', [
      'netns',
      'exec',
      lab!.node(victim).netns,
      'curl',
      '-sf',
      'http://127.0.0.1:9273/metrics',
    ]);
    expect(metrics).toContain(`edgemesh_ipam_addresses_used{cidr="${cidrsBefore[0]}"} ${victimPods.length}\n`);
    const again: LabPod[] = [];
    for (const p of victimPods) {
      const result = await cniAdd(lab!.cniTarget(p));
      again.push({ ...p, ips: resultAddresses(result) });
    }
    for (const p of again) expect(p.ips.join(','), p.name).toBe(ipsBefore.get(p.name));
    expect(metrics).not.toContain('edgemesh_ready 0');
  });

  it('hostile annotations written on one Node take no agent down, and the matrix stays whole', async () => {
    // What a compromised node (or a careless operator) can write on its own Node object.
    const hostile: Array<[string, string]> = [
      ['edgemesh.io/pod-cidrs', '10.1/16'],
      ['edgemesh.io/pod-cidrs', '0xa.0.0.0/8'],
      ['edgemesh.io/pod-cidrs', '167772161/8'],
      ['edgemesh.io/pod-cidrs', '0.0.0.0/0'],
      ['edgemesh.io/pod-cidrs', '10.244.0.0/16'],
      ['edgemesh.io/pod-cidrs', `${'9'.repeat(5000)}/8`],
      ['edgemesh.io/node-ip', '127.0.0.1'],
      ['edgemesh.io/node-ip', 'fe80::1%eth0'],
      ['edgemesh.io/multiaddrs', '{"not":"a list"}'],
      ['edgemesh.io/multiaddrs', '["/ip4/1.2.3.4/tcp/99999"]'],
      ['edgemesh.io/peer-id', 'not-a-peer-id'],
      ['edgemesh.io/punch-port', '-1'],
      ['edgemesh.io/punch-port', '1e3'],
    ];
    const victim = 'edge-b-1';
    for (const [key, value] of hostile) {
      await lab!.kubectl(['annotate', 'node', victim, '--overwrite', `${key}=${value}`]);
      await new Promise((r) => setTimeout(r, 150));
    }
    // Its own agent writes its true annotations back (they drifted); give the watch a moment.
    await new Promise((r) => setTimeout(r, 3000));
    expect(await lab!.deadAgents()).toEqual([]);
    const again = await runMatrix(lab!);
    expect(again.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.to}`)).toEqual([]);
  });

  it('deleting a Node removes its routes on every other node and frees its block', async () => {
    const gone = lab!.nodes.filter((n) => n.site === 'edge-a').at(-1)!;
    const sameSite = lab!.nodes.find((n) => n.site === gone.site && n.name !== gone.name)!;
    const block = (await lab!.agentStatus(gone.name)).podCidrs[0]!;
    expect(await run('ip', ['-n', sameSite.netns, 'route', 'show', block])).toContain(`via ${gone.ip}`);
    await lab!.killAgent(gone.name, 'SIGTERM');
    await lab!.kubectl(['delete', 'node', gone.name]);
    for (const node of lab!.nodes.filter((n) => n.name !== gone.name)) {
      await waitFor(`${node.name} forgets ${gone.name}`, async () => {
        const status = await lab!.agentStatus(node.name);
        return status.peers.some((p) => p.node === gone.name) ? undefined : true;
      });
      await waitFor(`${node.name} drops its route to ${block}`, async () =>
        (await run('ip', ['-n', node.netns, 'route', 'show', block])).trim() === '' ? true : undefined,
      );
    }
    await waitFor('IPAMBlock garbage-collected', async () => {
      const items = JSON.parse(await lab!.kubectl(['get', 'ipamblocks', '-o', 'json'])).items as Array<{
        spec: { node: string; cidr: string };
      }>;
      return items.some((i) => i.spec.node === gone.name || i.spec.cidr === block) ? undefined : true;
    });
  });
});
