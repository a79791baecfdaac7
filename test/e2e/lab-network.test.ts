// The lab's network on its own (no agents): NAT routers behave like home routers, the
// internet segment connects the sites, options change what they claim to, and destroying
// the network leaves the root namespace exactly as it was.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../common/exec.ts';
import { listNetns, runIn, runPrefix } from '../../common/netns.ts';
import {
  addRouterRule,
  buildNetwork,
  destroyNetwork,
  impairLink,
  type LabNetwork,
  NamespaceClashError,
  nodeNet,
  pingFrom,
  routerNet,
  setSymmetricNat,
} from '../../lab/network.ts';
import { defaultTopology } from '../../lab/topology.ts';
import { childrenOf, type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';

const observer = fileURLToPath(new URL('./helpers/tcp-observer.ts', import.meta.url));
const servers: ChildProcess[] = [];

/** Starts the observer server inside a namespace and resolves once it listens. */
async function serveIn(netns: string, port: number): Promise<void> {
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, observer, 'serve', String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  servers.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`observer server exited (${code})`)));
  });
}

async function stopServers(): Promise<void> {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.exitCode !== null || s.signalCode !== null) return resolve();
          s.once('exit', () => resolve());
          s.kill('SIGKILL');
        }),
    ),
  );
}

/** The source address:port the server saw, or null when the connection failed. */
async function observedSource(netns: string, host: string, port: number, localPort?: number): Promise<string | null> {
  try {
    const args = [process.execPath, observer, 'connect', host, String(port), ...(localPort ? [String(localPort)] : [])];
    return (await run('ip', ['netns', 'exec', netns, ...args])).trim();
  } catch {
    return null;
  }
}

describe('lab network', () => {
  const prefix = runPrefix('eml');
  let before: HostSnapshot;
  let net: LabNetwork | undefined;

  beforeAll(async () => {
    before = await snapshotHost();
    net = await buildNetwork(defaultTopology({ nodesPerSite: 2, podsPerNode: 0 }), prefix);
    await serveIn(nodeNet(net, 'cloud-1').netns, 7000);
    await serveIn(nodeNet(net, 'edge-a-1').netns, 7000);
  });

  afterAll(async () => {
    await stopServers();
    if (net) await destroyNetwork(net);
  });

  it('creates only prefixed namespaces and keeps interface names within 15 characters', async () => {
    const ours = (await listNetns()).filter((n) => n.startsWith(prefix)).sort();
    expect(ours).toEqual([...net!.namespaces].sort());
    expect(ours).toHaveLength(2 + 2 + 6); // inet, api, two routers, six nodes
    for (const ns of ours) {
      const names = (await run('ip', ['-n', ns, '-o', 'link', 'show']))
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(':')[1]!.trim().split('@')[0]!);
      for (const n of names) expect(n.length).toBeLessThanOrEqual(15);
    }
  });

  it('connects every node to the relay and the API server, edge nodes through their NAT', async () => {
    const api = net!.topology.apiServer.ip;
    for (const node of net!.nodes) {
      expect(await pingFrom(node.netns, '203.0.113.10'), `${node.name} → cloud-1`).not.toBeNull();
      expect(await pingFrom(node.netns, api), `${node.name} → api`).not.toBeNull();
    }
    expect(await pingFrom(nodeNet(net!, 'edge-a-1').netns, '192.168.10.12'), 'same LAN').not.toBeNull();
  });

  it('masquerades edge traffic behind the router WAN address, preserving the source port', async () => {
    const seen = await observedSource(nodeNet(net!, 'edge-a-1').netns, '203.0.113.10', 7000, 41001);
    expect(seen).toBe(`${routerNet(net!, 'edge-a').wanIp}:41001`);
    // A public node is seen as itself.
    expect(await observedSource(nodeNet(net!, 'cloud-2').netns, '203.0.113.10', 7000, 41002)).toBe(
      '203.0.113.11:41002',
    );
  });

  it('drops unsolicited inbound connections at the NAT router', async () => {
    const cloud = nodeNet(net!, 'cloud-1');
    const router = routerNet(net!, 'edge-a');
    // Positive control: the server on edge-a-1 answers inside its LAN.
    expect(await observedSource(nodeNet(net!, 'edge-a-2').netns, '192.168.10.11', 7000)).toMatch(
      /^192\.168\.10\.12:\d+$/,
    );
    // An attacker on the internet routing the LAN at the router's WAN address gets nothing.
    await run('ip', ['-n', cloud.netns, 'route', 'add', router.lanCidr, 'via', router.wanIp]);
    try {
      expect(await observedSource(cloud.netns, '192.168.10.11', 7000)).toBeNull();
      expect(await pingFrom(cloud.netns, '192.168.10.11', 1)).toBeNull();
    } finally {
      await run('ip', ['-n', cloud.netns, 'route', 'del', router.lanCidr, 'via', router.wanIp]);
    }
  });

  it('switches a router to a symmetric NAT (random ports) and back', async () => {
    const edge = nodeNet(net!, 'edge-a-1').netns;
    await setSymmetricNat(net!, 'edge-a', true);
    const ports = [];
    for (const localPort of [41011, 41012, 41013]) {
      const seen = await observedSource(edge, '203.0.113.10', 7000, localPort);
      expect(seen).toMatch(/^203\.0\.113\.101:\d+$/);
      ports.push(Number(seen!.split(':')[1]));
    }
    // With --random-fully none of three connections keeps its port (chance of a false
    // failure: about 3 in 64,000).
    expect(ports).not.toContain(41011);
    expect(ports.filter((p, i) => p === [41011, 41012, 41013][i])).toHaveLength(0);
    await setSymmetricNat(net!, 'edge-a', false);
    expect(await observedSource(edge, '203.0.113.10', 7000, 41014)).toBe('203.0.113.101:41014');
  });

  it('cuts a path with a router rule and restores it', async () => {
    const edge = nodeNet(net!, 'edge-b-1').netns;
    const undo = await addRouterRule(net!, 'edge-b', ['-d', '203.0.113.10', '-j', 'DROP']);
    try {
      expect(await pingFrom(edge, '203.0.113.10', 1)).toBeNull();
      expect(await pingFrom(edge, '203.0.113.11', 1)).not.toBeNull();
    } finally {
      await undo();
    }
    expect(await pingFrom(edge, '203.0.113.10')).not.toBeNull();
  });

  it('emulates loss on a site uplink', async () => {
    const router = routerNet(net!, 'edge-b');
    await impairLink(
      { netns: router.netns, dev: 'wan0' },
      { netns: net!.inetNetns, dev: 'v-rtr-b' },
      {
        delayMs: 0,
        jitterMs: 0,
        lossPct: 50,
      },
    );
    const out = await runIn(nodeNet(net!, 'edge-b-1').netns, 'ping', [
      '-n',
      '-q',
      '-c',
      '60',
      '-i',
      '0.01',
      '-W',
      '1',
      '203.0.113.10',
    ]).catch((e: { stderr?: string; message: string }) => e.message);
    const m = /(\d+) received/.exec(out);
    const received = Number(m?.[1]);
    // 50% each way: ~25% of echoes come back; both bounds fail with probability < 1e-6.
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(45);
  });

  it('adds delay with netem, or says clearly that this kernel has none', async () => {
    const cloud = nodeNet(net!, 'cloud-2');
    const link = [
      { netns: cloud.netns, dev: 'eth0' },
      { netns: net!.inetNetns, dev: 'v-c2' },
    ] as const;
    const delayed = await impairLink(link[0], link[1], { delayMs: 50, jitterMs: 0, lossPct: 0 }).then(
      () => true,
      (err: Error) => {
        // Kernels built without CONFIG_NET_SCH_NETEM (this project's CI machine).
        expect(err.message).toContain('this kernel has no netem qdisc');
        return false;
      },
    );
    if (delayed) {
      // 50 ms on each end's egress: the RTT through this link grows by about 100 ms.
      const rtt = await pingFrom(cloud.netns, '203.0.113.10', 3);
      expect(rtt).toBeGreaterThanOrEqual(95);
      await run('tc', ['-n', link[0].netns, 'qdisc', 'del', 'dev', 'eth0', 'root']);
      await run('tc', ['-n', link[1].netns, 'qdisc', 'del', 'dev', 'v-c2', 'root']);
    }
    expect(await pingFrom(cloud.netns, '203.0.113.10')).toBeLessThan(50);
  });

  it('refuses to build over existing namespaces and touches none of them', async () => {
    await expect(buildNetwork(defaultTopology({ podsPerNode: 0 }), prefix)).rejects.toBeInstanceOf(NamespaceClashError);
    expect((await listNetns()).filter((n) => n.startsWith(prefix))).toHaveLength(net!.namespaces.length);
  });

  it('destroys everything: root links, rules and namespaces are as before', async () => {
    await stopServers();
    await destroyNetwork(net!);
    net = undefined;
    const after = await snapshotHost();
    expect(after.netns.filter((n) => n.startsWith(prefix))).toEqual([]);
    expect(after.links).toEqual(before.links);
    expect(after.iptables).toEqual(before.iptables);
    expect(after.ip6tables).toEqual(before.ip6tables);
    expect(childrenOf(after)).toEqual(childrenOf(before));
  });
});

describe('lab network, dual-stack underlay', () => {
  const prefix = runPrefix('eml');
  let net: LabNetwork | undefined;

  beforeAll(async () => {
    net = await buildNetwork(defaultTopology({ dualStack: true, podsPerNode: 0 }), prefix);
  });

  afterAll(async () => {
    if (net) await destroyNetwork(net);
  });

  it('gives every site segment an IPv6 /64 that reaches inside the site and no further', async () => {
    const a1 = nodeNet(net!, 'edge-a-1');
    const a2 = nodeNet(net!, 'edge-a-2');
    const c1 = nodeNet(net!, 'cloud-1');
    const c2 = nodeNet(net!, 'cloud-2');
    expect(a2.ipv6).toBe('fd00:ed6e:2::c');
    expect(await pingFrom(a1.netns, a2.ipv6!)).not.toBeNull();
    expect(await pingFrom(c1.netns, c2.ipv6!)).not.toBeNull();
    // The NAT routers do not route IPv6: no way from a LAN to the cloud segment.
    expect(await pingFrom(a1.netns, c1.ipv6!, 1)).toBeNull();
  });
});
