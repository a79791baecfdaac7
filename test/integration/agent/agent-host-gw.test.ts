// Two agents in one site (one LAN): start-up publishes the Node annotations, writes the
// conflist and installs the client; pods get IPs through the CNI client; pod↔pod goes over
// host-gw routes; kill -9 + restart keeps pod IPs and routes without duplicates; deleting a
// Node removes its route on the other node; uninstall leaves nothing behind.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { AgentCluster, type TestNode, waitFor } from './harness.ts';

/** Children of `pid` running the CNI client's netlink-helper mode. */
async function netlinkHelpers(pid: number): Promise<number[]> {
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).split(/\s+/).filter(Boolean);
  const helpers: number[] = [];
  for (const child of children) {
    const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').includes('netlink-helper')) helpers.push(Number(child));
  }
  return helpers;
}

/** True once `pid` has exited (gone, or a zombie waiting for its new parent). */
async function exited(pid: number): Promise<true | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return !stat || /\) [ZX] /.test(stat) ? true : undefined;
}

describe('agent: one site, host-gw', () => {
  const cluster = new AgentCluster();
  let a: TestNode;
  let b: TestNode;

  beforeAll(async () => {
    await cluster.up({ sites: ['lan', 'lan'], subnet: '192.168.77' });
    [a, b] = cluster.nodes as [TestNode, TestNode];
    await cluster.startAgent(a);
    await cluster.startAgent(b);
  }, 150_000);

  afterAll(async () => {
    await cluster.cleanup();
  }, 60_000);

  it('publishes itself on its Node and sets up the host for the runtime', async () => {
    const node = await cluster.getNode(a.name);
    const ann = node.metadata.annotations ?? {};
    const status = await cluster.status(a);
    expect(ann['edgemesh.io/peer-id']).toBe(status.peerId);
    expect(ann['edgemesh.io/pod-cidrs']).toBe(status.podCidrs.join(','));
    expect(ann['edgemesh.io/site']).toBe('lan');
    expect(ann['edgemesh.io/node-ip']).toBe(a.ip);
    expect(JSON.parse(ann['edgemesh.io/multiaddrs']!)).toContain(`/ip4/${a.ip}/tcp/4001/p2p/${status.peerId}`);
    // Listening on 0.0.0.0 must not publish 127.0.0.1: a peer would dial itself.
    expect(ann['edgemesh.io/multiaddrs']).not.toMatch(/\/ip4\/127\.|\/ip6\/::1\/|\/ip6\/fe80/);
    expect(status.podCidrs[0]).toMatch(/^10\.99\.\d+\.0\/24$/);

    const conflist = JSON.parse(readFileSync(join(a.cniConfDir, '10-edgemesh.conflist'), 'utf8'));
    expect(conflist).toMatchObject({
      cniVersion: '1.0.0',
      plugins: [{ type: 'edgemesh', socket: join(a.runDir, 'cni.sock') }],
    });
    expect(statSync(join(a.cniBinDir, 'edgemesh')).mode & 0o111).toBeTruthy();
    expect(statSync(join(a.stateDir, 'node.key')).mode & 0o777).toBe(0o600);
    // Cluster CIDR into the TUN with the gateway as source; the peer's block via its node IP.
    const gateway = status.podCidrs[0]!.replace(/0\/24$/, '1');
    const peerCidr = (await cluster.status(b)).podCidrs[0]!;
    const routes = await cluster.podRoutes(a);
    expect(routes).toContain(`10.99.0.0/16 dev edgemesh0 scope link src ${gateway}`);
    expect(routes).toContain(`${peerCidr} via ${b.ip} dev ${cluster.prefix}v1`);
    expect(status.peers).toMatchObject([{ node: b.name, site: 'lan', podCidrs: [peerCidr], path: 'host-gw' }]);
    // The operator's view: `edgemesh-cni status` prints the same peer as a table row.
    const table = await cluster.cli(a, ['status', '--run-dir', a.runDir]);
    expect(table).toMatch(new RegExp(`^${b.name}\\s+lan\\s+${peerCidr.replaceAll('.', '\\.')}\\s+host-gw\\s`, 'm'));
  });

  it('puts its annotations back when someone removes them', async () => {
    await cluster.kubectl(['annotate', 'node', a.name, 'edgemesh.io/peer-id-', 'edgemesh.io/pod-cidrs-']);
    const status = await cluster.status(a);
    await waitFor('annotations re-published', async () => {
      const ann = (await cluster.getNode(a.name)).metadata.annotations ?? {};
      return ann['edgemesh.io/peer-id'] === status.peerId && ann['edgemesh.io/pod-cidrs'] === status.podCidrs[0]
        ? true
        : undefined;
    });
    // The peer kept (or got back) its route to this node.
    await waitFor('peer route back', async () =>
      (await cluster.podRoutes(b)).some((r) => r.startsWith(`${status.podCidrs[0]} via ${a.ip}`)) ? true : undefined,
    );
  });

  it('gives pods IPs through the CNI client; pods on the two nodes reach each other by Pod IP', async () => {
    const p1 = await cluster.addPod(a, 'p1');
    const p2 = await cluster.addPod(b, 'p2');
    expect(p1.ip).not.toBe(p2.ip);
    expect(await cluster.ping(p1, p2.ip)).toBe(true);
    expect(await cluster.ping(p2, p1.ip)).toBe(true);
    // host-gw: nothing crossed the tunnel.
    expect((await cluster.status(a)).peers[0]!.txPackets).toBe(0);
  });

  it("gives a Node that claims another node's block, or addresses nobody assigned it, no route", async () => {
    const aCidr = (await cluster.status(a)).podCidrs[0]!;
    const intruder = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: 'intruder',
        annotations: {
          'edgemesh.io/peer-id': '12D3KooWGLmu861KbXD6HjhGKVBSFtR7saza4j8J25nP2RPWHwnp',
          'edgemesh.io/multiaddrs': '[]',
          // a's own block, a /32 inside it, a block nobody assigned, and a range outside the cluster.
          'edgemesh.io/pod-cidrs': `${aCidr},${aCidr.replace(/0\/24$/, '9/32')},10.99.250.0/24,192.0.2.0/24`,
          'edgemesh.io/site': 'lan',
          'edgemesh.io/node-ip': '192.168.77.250',
        },
      },
    };
    await cluster.kubectl(['create', '-f', '-'], JSON.stringify(intruder));
    try {
      const seen = await waitFor('intruder refused on b', async () => {
        const peer = (await cluster.status(b)).peers.find((p) => p.node === 'intruder');
        return peer?.refusedCidrs?.length === 4 ? peer : undefined;
      });
      expect(seen.podCidrs).toEqual([]);
      const routes = await run('ip', ['-n', b.netns, 'route', 'show']);
      expect(routes).not.toContain('192.168.77.250');
      expect(routes).toContain(`${aCidr} via ${a.ip}`);
      // b's forwarder also keeps a's block: pods still reach each other.
      const p1 = cluster.pods.find((p) => p.name === 'p1')!;
      const p2 = cluster.pods.find((p) => p.name === 'p2')!;
      expect(await cluster.ping(p2, p1.ip)).toBe(true);
      // The operator sees it on the intruder's Node, once the refusal outlasted its grace period (15 s).
      await waitFor(
        'PodCIDRRefused event',
        async () => {
          const events = JSON.parse(await cluster.kubectl(['get', 'events', '-n', 'default', '-o', 'json'])) as {
            items: Array<{ reason: string; involvedObject: { name: string } }>;
          };
          return events.items.some((e) => e.reason === 'PodCIDRRefused' && e.involvedObject.name === 'intruder')
            ? true
            : undefined;
        },
        60_000,
      );
    } finally {
      await cluster.kubectl(['delete', 'node', 'intruder']);
    }
    await waitFor('intruder gone', async () =>
      (await cluster.status(b)).peers.some((p) => p.node === 'intruder') ? undefined : true,
    );
  });

  it('repairs a pod route someone deleted by hand', async () => {
    const peerCidr = (await cluster.status(b)).podCidrs[0]!;
    await run('ip', ['-n', a.netns, 'route', 'del', peerCidr]);
    expect((await cluster.podRoutes(a)).some((r) => r.startsWith(peerCidr))).toBe(false);
    await waitFor('route repaired', async () =>
      (await cluster.podRoutes(a)).some((r) => r.startsWith(`${peerCidr} via ${b.ip}`)) ? true : undefined,
    );
  });

  it('serves /metrics with the peer path and CNI latencies', async () => {
    const text = await run('ip', ['netns', 'exec', a.netns, 'curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    expect(text).toContain(`edgemesh_peer_path{peer="${b.name}",path="host-gw"} 1`);
    expect(text).toMatch(/edgemesh_cni_operation_duration_seconds_count\{operation="ADD",result="ok"\} [1-9]/);
    expect(text).toMatch(/edgemesh_ipam_addresses_used\{cidr="10\.99\.\d+\.0\/24"\} 1/);
    expect(text).toContain('edgemesh_ready 1');
    // The pod was plumbed by the agent's netlink helper (no ip/nsenter per pod).
    expect(text).toContain('edgemesh_cni_netlink_helper_starts_total 1');
    expect(text).not.toMatch(/edgemesh_cni_iproute2_fallbacks_total [1-9]/);
  });

  it('kill -9 and restart keeps pod IPs, routes and rules without duplicates', async () => {
    const p1 = cluster.pods.find((p) => p.name === 'p1')!;
    const p2 = cluster.pods.find((p) => p.name === 'p2')!;
    const routesBefore = await cluster.podRoutes(a);
    const natBefore = await run('ip', ['netns', 'exec', a.netns, 'iptables-save', '-t', 'nat']);
    const cidrBefore = (await cluster.status(a)).podCidrs;
    await cluster.stopAgent(a, 'SIGKILL');
    // host-gw traffic does not need the agent.
    expect(await cluster.ping(p2, p1.ip)).toBe(true);
    await cluster.startAgent(a);
    expect((await cluster.status(a)).podCidrs).toEqual(cidrBefore);
    // The same attachment keeps its IP (ADD is idempotent on the lease), a new pod gets another.
    const again = await cluster.cni(a, 'ADD', { netns: p1.netns, containerId: p1.containerId });
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).ips[0].address).toBe(`${p1.ip}/24`);
    const p3 = await cluster.addPod(a, 'p3');
    expect([p1.ip, p2.ip]).not.toContain(p3.ip);
    expect((await cluster.podRoutes(a)).sort()).toEqual(routesBefore.sort());
    const natAfter = await run('ip', ['netns', 'exec', a.netns, 'iptables-save', '-t', 'nat']);
    const rules = (s: string) =>
      s
        .split('\n')
        .filter((l) => l.startsWith('-A'))
        .sort();
    expect(rules(natAfter)).toEqual(rules(natBefore));
    expect(await cluster.ping(p3, p2.ip)).toBe(true);
  });

  it('SIGTERM stops the agent cleanly (exit 0) and the next start serves again', async () => {
    // b served an ADD (p2): its netlink helper runs, and goes with the agent.
    const helpers = await netlinkHelpers(b.agent!.pid!);
    expect(helpers).toHaveLength(1);
    expect(await cluster.stopAgent(b, 'SIGTERM')).toBe(0);
    await waitFor('the netlink helper to exit', () => exited(helpers[0]!), 10_000);
    expect(existsSync(join(b.runDir, 'cni.sock'))).toBe(false);
    // Agent absent: the client answers "try again later" (11), as runtimes expect.
    const pod = cluster.pods.find((p) => p.name === 'p2')!;
    const res = await cluster.cni(b, 'CHECK', { netns: pod.netns, containerId: pod.containerId });
    expect(res.code).not.toBe(0);
    expect(JSON.parse(res.stdout).code).toBe(11);
    await cluster.startAgent(b);
  });

  it('deleting a Node removes its routes on the other node and drops it from the peer table', async () => {
    const peerCidr = (await cluster.status(b)).podCidrs[0]!;
    await cluster.stopAgent(b, 'SIGTERM');
    await cluster.kubectl(['delete', 'node', b.name]);
    await waitFor('route removed', async () =>
      (await cluster.podRoutes(a)).some((r) => r.startsWith(peerCidr)) ? undefined : true,
    );
    expect((await cluster.status(a)).peers).toEqual([]);
    // Its IPAMBlock is garbage-collected with the Node.
    await waitFor('block freed', async () => {
      const blocks = await cluster.kubectl(['get', 'ipamblocks', '-o', 'json']);
      return (JSON.parse(blocks).items as Array<{ spec: { node: string } }>).some((i) => i.spec.node === b.name)
        ? undefined
        : true;
    });
  });

  it('uninstall removes what the agent created on the host and keeps the leases', async () => {
    await cluster.stopAgent(a, 'SIGTERM');
    // A port someone else put on the bridge is released with it, not deleted (uninstall
    // used to delete every port of the bridge).
    await run('ip', ['-n', a.netns, 'link', 'add', 'xport0', 'type', 'veth', 'peer', 'name', 'xpeer0']);
    await run('ip', ['-n', a.netns, 'link', 'set', 'xport0', 'master', 'edgemesh-br0']);
    const out = await cluster.cli(a, ['uninstall', '--config', a.configPath]);
    expect(out).toContain('removed interface edgemesh-br0');
    expect(out).not.toContain('xport0');
    expect(await run('ip', ['-n', a.netns, '-o', 'link', 'show', 'xport0'])).toContain('xport0');
    await run('ip', ['-n', a.netns, 'link', 'del', 'xport0']);
    const links = await run('ip', ['-n', a.netns, '-o', 'link', 'show']);
    expect(links).not.toContain('edgemesh0');
    expect(links).not.toContain('edgemesh-br0');
    expect(links).not.toMatch(/emv[0-9a-f]/);
    expect(await cluster.podRoutes(a)).toEqual([]);
    expect(await run('ip', ['netns', 'exec', a.netns, 'iptables-save', '-t', 'nat'])).not.toContain('EDGEMESH');
    expect(existsSync(join(a.cniConfDir, '10-edgemesh.conflist'))).toBe(false);
    expect(existsSync(join(a.cniBinDir, 'edgemesh'))).toBe(false);
    expect(existsSync(join(a.runDir, 'agent.sock'))).toBe(false);
    expect(existsSync(join(a.stateDir, 'node.key'))).toBe(true);
    await cluster.cli(a, ['uninstall', '--config', a.configPath, '--purge']);
    expect(existsSync(join(a.stateDir, 'node.key'))).toBe(false);
    expect(existsSync(join(a.stateDir, 'leases'))).toBe(false);
  });
});
