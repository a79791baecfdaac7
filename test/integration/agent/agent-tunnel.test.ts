// Two agents in two sites with public (TEST-NET) addresses: pod↔pod traffic crosses the
// TUN and a direct libp2p tunnel. status and /metrics report the path; capture returns a
// pcap of the flow; a checksummed pod↔pod TCP transfer survives `kill -9` of one agent and
// its restart, with no lease lost or duplicated.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { AgentCluster, type TestNode, type TestPod, waitFor } from './harness.ts';

const PEER = join(import.meta.dirname, 'transfer-peer.ts');

function startInPod(pod: TestPod, args: string[]) {
  const child = spawn('ip', ['netns', 'exec', pod.netns, process.execPath, PEER, ...args], {
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

describe('agent: two sites, direct tunnel', () => {
  const cluster = new AgentCluster();
  let a: TestNode;
  let b: TestNode;
  let p1: TestPod;
  let p2: TestPod;

  beforeAll(async () => {
    // This file covers the libp2p stream tunnel (the fallback path); agent-udp.test.ts the UDP one.
    cluster.overlayExtra = { transport: 'stream' };
    await cluster.up({ sites: ['site-a', 'site-b'], subnet: '203.0.113' });
    [a, b] = cluster.nodes as [TestNode, TestNode];
    await Promise.all([cluster.startAgent(a), cluster.startAgent(b)]);
    p1 = await cluster.addPod(a, 'p1');
    p2 = await cluster.addPod(b, 'p2');
  }, 180_000);

  afterAll(async () => {
    await cluster.cleanup();
  }, 60_000);

  it('runs the agent with the young-generation cap that keeps Buffer garbage in Scavenges (same pid)', async () => {
    // `ip netns exec` and the entry's execve both keep the pid: this is the agent process.
    const cmdline = (await run('cat', [`/proc/${a.agent!.pid}/cmdline`])).split('\0');
    expect(cmdline).toContain('--scavenger-max-new-space-capacity-mb=8');
    expect(cmdline).toContain('agent');
  });

  it('derives the TUN MTU from the underlay: 1500 less the UDP session overhead over IPv6', async () => {
    const link = JSON.parse(await run('ip', ['-n', a.netns, '-j', 'link', 'show', 'dev', 'edgemesh0'])) as {
      mtu: number;
    }[];
    expect(link[0]?.mtu).toBe(1500 - 48 - 32);
  });

  it('routes other sites through the TUN (no host-gw) and pods reach each other by Pod IP', async () => {
    const routes = await cluster.podRoutes(a);
    expect(routes.filter((r) => r.includes(' via '))).toEqual([]);
    expect(routes.some((r) => r.startsWith('10.99.0.0/16 dev edgemesh0'))).toBe(true);
    expect(await cluster.ping(p1, p2.ip, 3)).toBe(true);
    expect(await cluster.ping(p2, p1.ip, 3)).toBe(true);
  });

  it('status and /metrics report the direct path and the traffic it carried', async () => {
    const status = await cluster.status(a);
    const peer = status.peers.find((p) => p.node === b.name)!;
    expect(peer).toMatchObject({ site: 'site-b', path: 'direct' });
    expect(peer.txPackets).toBeGreaterThanOrEqual(3);
    expect(peer.rxPackets).toBeGreaterThanOrEqual(3);
    expect(peer.txBytes).toBeGreaterThan(0);
    expect(peer.lastSeen).not.toBeNull();
    const metrics = await run('ip', ['netns', 'exec', a.netns, 'curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    expect(metrics).toContain(`edgemesh_peer_path{peer="${b.name}",path="direct"} 1`);
    expect(metrics).toMatch(new RegExp(`edgemesh_peer_tx_packets_total\\{peer="${b.name}"\\} [1-9]`));
    const table = await cluster.cli(a, ['status', '--run-dir', a.runDir]);
    expect(table).toMatch(new RegExp(`^${b.name}\\s+site-b\\s+\\S+\\s+direct\\s`, 'm'));
  });

  it('capture returns a pcap of the forwarded flow that tcpdump reads', async () => {
    const file = join(cluster.dir, 'icmp.pcap');
    const capture = cluster.cli(a, [
      'capture',
      '--run-dir',
      a.runDir,
      '--peer',
      b.name,
      '--proto',
      'icmp',
      '--packets',
      '4',
      '--seconds',
      '60',
      '-w',
      file,
    ]);
    // Ping until the capture has its packets (it starts when the CLI has loaded).
    await waitFor(
      'capture done',
      async () => {
        await cluster.ping(p1, p2.ip, 2);
        return (await Promise.race([
          capture.then(() => true),
          new Promise((r) => setTimeout(() => r(undefined), 10)),
        ])) as true | undefined;
      },
      90_000,
    );
    const text = await run('tcpdump', ['-nr', file]);
    const lines = text.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(text).toContain(`${p1.ip} > ${p2.ip}: ICMP echo request`);
    expect(text).toContain(`${p2.ip} > ${p1.ip}: ICMP echo reply`);
  });

  it('a checksummed pod↔pod TCP transfer survives kill -9 and restart of one agent; no lease lost or duplicated', async () => {
    const bytes = 12 * 1024 * 1024;
    const server = startInPod(p2, ['serve', '5201']);
    await waitFor('server listening', async () => (server.output().includes('listening') ? true : undefined));
    const sender = startInPod(p1, ['send', p2.ip, '5201', String(bytes), '256']);
    // Let the flow run, then crash the receiving side's agent mid-transfer.
    await waitFor('traffic flowing', async () =>
      ((await cluster.status(a)).peers[0]?.txBytes ?? 0) > 1024 * 1024 ? true : undefined,
    );
    await cluster.stopAgent(b, 'SIGKILL');
    await cluster.startAgent(b);
    const [sent, received] = await Promise.all([sender.done, server.done]);
    expect(sent.code, sent.err).toBe(0);
    expect(received.code, received.err).toBe(0);
    const s = JSON.parse(sent.out.trim().split('\n').pop()!);
    const r = JSON.parse(received.out.trim().split('\n').pop()!);
    expect(s.bytes).toBe(bytes);
    expect(r).toEqual(s);
    // Leases: the pod keeps its IP (ADD is idempotent on the same attachment) and a new
    // pod gets a different one.
    const again = await cluster.cni(b, 'ADD', { netns: p2.netns, containerId: p2.containerId });
    expect(JSON.parse(again.stdout).ips[0].address).toBe(`${p2.ip}/24`);
    const p3 = await cluster.addPod(b, 'p3');
    expect(p3.ip).not.toBe(p2.ip);
    const metrics = await run('ip', ['netns', 'exec', b.netns, 'curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    expect(metrics).toMatch(/edgemesh_ipam_addresses_used\{cidr="10\.99\.\d+\.0\/24"\} 2\n/);
    expect(await cluster.ping(p3, p1.ip)).toBe(true);
  }, 300_000);
});
