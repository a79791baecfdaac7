// Two agents in two sites (public TEST-NET addresses on one link): pod traffic moves onto a
// UDP session (native UDP data socket, keys from /edgemesh/session/1.0.0) by itself and
// carries iperf3; when UDP is dropped (iptables in node A's namespace) the pair ends on the
// libp2p stream tunnel by itself and stays reachable, then returns to UDP.
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { AgentCluster, type TestNode, type TestPod, waitFor } from './harness.ts';

async function iperf(from: TestPod, to: TestPod, seconds: number): Promise<number> {
  const server = spawn('ip', ['netns', 'exec', to.netns, 'iperf3', '-s', '-1', '-B', to.ip], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 500));
    const out = await run('ip', [
      'netns',
      'exec',
      from.netns,
      'iperf3',
      '-c',
      to.ip,
      '-t',
      String(seconds),
      '-J',
      '--connect-timeout',
      '5000',
    ]);
    const result = JSON.parse(out) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
    return result.end.sum_received.bits_per_second;
  } finally {
    server.kill('SIGKILL');
  }
}

async function blockUdp(n: TestNode, blocked: boolean): Promise<void> {
  for (const chain of ['INPUT', 'OUTPUT']) {
    await run('ip', [
      'netns',
      'exec',
      n.netns,
      'iptables',
      '-w',
      blocked ? '-I' : '-D',
      chain,
      '-p',
      'udp',
      '-j',
      'DROP',
    ]);
  }
}

describe('agent: UDP sessions carry pod traffic, the stream tunnel is the fallback', () => {
  const cluster = new AgentCluster();
  let a: TestNode;
  let b: TestNode;
  let p1: TestPod;
  let p2: TestPod;
  const pathOf = async (from: TestNode, to: TestNode) =>
    (await cluster.status(from)).peers.find((p) => p.node === to.name)?.path;

  beforeAll(async () => {
    await cluster.up({ sites: ['site-a', 'site-b'], subnet: '203.0.113' });
    [a, b] = cluster.nodes as [TestNode, TestNode];
    await Promise.all([cluster.startAgent(a), cluster.startAgent(b)]);
    p1 = await cluster.addPod(a, 'p1');
    p2 = await cluster.addPod(b, 'p2');
  }, 180_000);

  afterAll(async () => {
    await cluster.cleanup();
  }, 60_000);

  it('moves pod traffic onto a UDP session by itself and carries iperf3 over it', async () => {
    expect(await cluster.ping(p1, p2.ip, 3)).toBe(true);
    await waitFor('udp-direct at A', async () => ((await pathOf(a, b)) === 'udp-direct' ? true : undefined), 30_000);
    await waitFor('udp-direct at B', async () => ((await pathOf(b, a)) === 'udp-direct' ? true : undefined), 30_000);
    const before = (await cluster.status(a)).peers.find((p) => p.node === b.name)!;
    const bps = await iperf(p1, p2, 3);
    console.info(`iperf3 pod→pod over the UDP session (noisy, shared machine): ${(bps / 1e9).toFixed(2)} Gbit/s`);
    expect(bps).toBeGreaterThan(10e6);
    const after = (await cluster.status(a)).peers.find((p) => p.node === b.name)!;
    expect(after.path).toBe('udp-direct');
    expect(after.txBytes - before.txBytes).toBeGreaterThan(3e6);
    const metrics = await run('ip', ['netns', 'exec', a.netns, 'curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    expect(metrics).toContain(`edgemesh_peer_path{peer="${b.name}",path="udp-direct"} 1`);
  }, 60_000);

  it('falls back to the stream tunnel when UDP is dropped, stays reachable, and returns to UDP', async () => {
    expect(await pathOf(a, b)).toBe('udp-direct');
    await blockUdp(a, true);
    try {
      await waitFor('stream path at A', async () => ((await pathOf(a, b)) === 'direct' ? true : undefined), 30_000);
      expect(await cluster.ping(p1, p2.ip, 3)).toBe(true);
      const bps = await iperf(p1, p2, 2);
      console.info(`iperf3 pod→pod on the stream fallback (noisy): ${(bps / 1e9).toFixed(2)} Gbit/s`);
      expect(bps).toBeGreaterThan(1e6);
      expect(await pathOf(a, b)).toBe('direct');
    } finally {
      await blockUdp(a, false);
    }
    await waitFor('back on UDP', async () => ((await pathOf(a, b)) === 'udp-direct' ? true : undefined), 60_000);
    expect(await cluster.ping(p1, p2.ip, 3)).toBe(true);
    // udp → stream → udp (after the first stream → udp): counted, and visible in /metrics.
    const metrics = await run('ip', ['netns', 'exec', a.netns, 'curl', '-sf', 'http://127.0.0.1:9273/metrics']);
    const switches = Number(/^edgemesh_udp_carrier_switches_total (\d+)/m.exec(metrics)?.[1] ?? 0);
    const changes = Number(/^edgemesh_path_changes_total (\d+)/m.exec(metrics)?.[1] ?? 0);
    expect(switches).toBeGreaterThanOrEqual(3);
    expect(changes).toBeGreaterThanOrEqual(3);
  }, 150_000);
});
