// The relayed stream fallback's TCP splice: both sites behind symmetric NATs (no TCP punch
// can work), UDP dropped at site A's router and the transport pinned to the stream. A and B
// first meet over libp2p's circuit relay; the tunnel then moves onto the relay's TCP splice
// (noise end to end over a plain TCP pipe through the relay) and checksummed frames cross it.
// Hostile use of the splice port and protocol is refused and counted.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import {
  createOverlayCluster,
  LISTEN_PORT,
  type OverlayCluster,
  PUNCH_PORT,
  RELAY_SPLICE_PORT,
  waitFor,
} from '../../support/overlay-cluster.ts';
import { OverlayPeerProcess } from '../../support/overlay-peer-client.ts';
import { setUdpBlockedAtA } from '../../support/overlay-topology.ts';

interface SpliceRelayStats {
  granted: number;
  refused: Record<string, number>;
  sockets: Record<string, number>;
  spliced: number;
  active: number;
  bytes: number;
}
interface Stats {
  rx: Record<string, { frames: number; bytes: number; bad: number }>;
  status: Array<{ node: string; path: string; remoteAddr?: string }>;
  counters: {
    splice?: { established: number; accepted: number; failed: Record<string, number>; relay?: SpliceRelayStats };
  };
  connections: Array<{ peer: string; remoteAddr: string; status: string }>;
}

describe('relayed stream tunnel over the relay TCP splice', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({
      randomFullyA: true,
      randomFullyB: true,
      transport: 'stream',
      splice: true,
      publicPeer: true,
    });
    c = await pending;
    await setUdpBlockedAtA(c.topo, true);
    // Counts the bytes reaching the relay's libp2p port (the circuit relay's hop traffic);
    // the rule goes with the namespace.
    await run('ip', [
      'netns',
      'exec',
      c.topo.relay.ns,
      'iptables',
      '-w',
      '-I',
      'INPUT',
      '-p',
      'tcp',
      '--dport',
      String(LISTEN_PORT),
    ]);
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs(60));
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  const stats = (p: OverlayPeerProcess) => p.request<Stats>('stats');
  const libp2pBytesAtRelay = async () => {
    const out = await run('ip', ['netns', 'exec', c.topo.relay.ns, 'iptables', '-w', '-L', 'INPUT', '-v', '-n', '-x']);
    const line = out.split('\n').find((l) => l.includes(`dpt:${LISTEN_PORT}`));
    return Number(line?.trim().split(/\s+/)[1] ?? Number.NaN);
  };
  const spliceAddr = () => `/ip4/${c.topo.relay.ip}/tcp/${RELAY_SPLICE_PORT}/p2p/`;

  it('moves the relayed tunnel off the circuit relay onto the splice and carries checksummed frames', async () => {
    expect(await c.a.request('connect', { node: 'b' })).toBe('relayed');
    const remoteOf = async (p: OverlayPeerProcess, node: string) =>
      (await stats(p)).status.find((s) => s.node === node)?.remoteAddr;
    // The tunnel in use is the spliced TCP connection (not a /p2p-circuit one) on both sides.
    await waitFor('A tunnel on the splice', async () => (await remoteOf(c.a, 'b'))?.startsWith(spliceAddr()), 30_000);
    await waitFor('B tunnel on the splice', async () => (await remoteOf(c.b, 'a'))?.startsWith(spliceAddr()), 10_000);
    expect(await remoteOf(c.a, 'b')).not.toContain('p2p-circuit');
    expect(await c.a.request('path', { node: 'b' })).toBe('relayed');

    const [rBefore, bBefore, hopBefore] = await Promise.all([stats(c.relay), stats(c.b), libp2pBytesAtRelay()]);
    const count = 400;
    const size = 16_384;
    await c.a.request('send', { node: 'b', count, size });
    await waitFor(
      'frames at B',
      async () => (await stats(c.b)).rx.a!.frames - (bBefore.rx.a?.frames ?? 0) >= count,
      30_000,
    );
    const [rAfter, bAfter, aAfter, hopAfter] = await Promise.all([
      stats(c.relay),
      stats(c.b),
      stats(c.a),
      libp2pBytesAtRelay(),
    ]);
    expect(bAfter.rx.a?.bad ?? 0).toBe(0);
    expect(bAfter.rx.a!.frames - (bBefore.rx.a?.frames ?? 0)).toBe(count);
    // Every frame crossed the relay's splice (plus noise/yamux overhead): the circuit relay
    // carried none of it.
    const piped = rAfter.counters.splice!.relay!.bytes - rBefore.counters.splice!.relay!.bytes;
    const hop = hopAfter - hopBefore;
    console.log(
      `splice: ${count} frames of ${size} B, relay piped ${piped} bytes; its libp2p port received ${hop} (${hopAfter} since the cluster was up)`,
    );
    expect(piped).toBeGreaterThanOrEqual(count * size);
    // The relay's libp2p port (where the circuit hop runs) saw keepalives only, not the data.
    expect(hop).toBeLessThan((count * size) / 20);
    expect(rAfter.counters.splice!.relay!.active).toBe(1);
    // One side asked (the punch leader, by peer ID order), the other was offered the splice.
    const roles = [aAfter, bAfter].map((s) => [s.counters.splice!.established, s.counters.splice!.accepted]);
    expect(roles.flat().reduce((x, y) => x + y)).toBe(2);
    expect(roles.map(([asked, offered]) => asked! + offered!)).toEqual([1, 1]);
  }, 120_000);

  it('refuses a stranger, a token used from another member, a reused token and a bad one (counted)', async () => {
    const relayIp = c.topo.relay.ip;
    const before = (await stats(c.relay)).counters.splice!.relay!;
    // A member asking for a splice to a non-member is refused.
    await expect(
      c.a.request('splice-token', { relay: 'relay', node: '12D3KooWNotAMemberOfThisCluster' }),
    ).rejects.toThrow(/unknown-peer/);
    // pub (a member) gets a legitimate token for the pair pub↔b and hands it to A, another
    // member: A presenting it comes from the wrong address and is closed.
    const grant = await c.pub!.request<{ token: string; port: number }>('splice-token', { relay: 'relay', node: 'b' });
    expect(grant.port).toBe(RELAY_SPLICE_PORT);
    // B was offered its half of pub↔b and joins with its socket first.
    await new Promise((r) => setTimeout(r, 1000));
    const byA = await c.a.request<{ closedMs?: number }>('splice-present', {
      ip: relayIp,
      port: grant.port,
      token: grant.token,
    });
    expect(byA.closedMs).toBeDefined();
    // The token was spent by that attempt: pub itself cannot use it now.
    const reuse = await c.pub!.request<{ closedMs?: number }>('splice-present', {
      ip: relayIp,
      port: grant.port,
      token: grant.token,
    });
    expect(reuse.closedMs).toBeDefined();

    // A stranger (not in the cluster): no libp2p connection, so no token; a made-up token is closed.
    const keyDir = await mkdtemp(join(tmpdir(), `${c.topo.prefix}splice-stranger-`));
    const stranger = new OverlayPeerProcess(c.topo.stranger.ns, {
      name: 'stranger',
      site: 'rogue',
      keyPath: join(keyDir, 'stranger.key'),
      listen: [`/ip4/0.0.0.0/tcp/${LISTEN_PORT}`],
      announce: [`/ip4/${c.topo.stranger.ip}/tcp/${LISTEN_PORT}`],
      punchPort: PUNCH_PORT,
      relay: false,
    });
    try {
      await stranger.ready();
      await stranger.request('directory', { nodes: c.nodes });
      await expect(stranger.request('connect', { node: 'relay' })).rejects.toThrow();
      await expect(stranger.request('splice-token', { relay: 'relay', node: 'b' })).rejects.toThrow();
      const forged = await stranger.request<{ closedMs?: number }>('splice-present', {
        ip: relayIp,
        port: RELAY_SPLICE_PORT,
        token: Buffer.alloc(32, 7).toString('base64'),
      });
      expect(forged.closedMs).toBeDefined();
    } finally {
      await stranger.stop();
      await rm(keyDir, { recursive: true, force: true });
    }
    const after = (await stats(c.relay)).counters.splice!.relay!;
    const delta = (k: string, from: Record<string, number>, to: Record<string, number>) =>
      (to[k] ?? 0) - (from[k] ?? 0);
    expect(delta('unknown-peer', before.refused, after.refused)).toBe(1);
    expect(delta('address-mismatch', before.sockets, after.sockets)).toBe(1);
    expect(delta('bad-token', before.sockets, after.sockets)).toBe(2); // the reuse and the forgery
    expect(after.granted - before.granted).toBe(1);
    // The pair A↔B keeps its own splice throughout.
    expect(after.active).toBeGreaterThanOrEqual(1);
  }, 120_000);
});

describe('a spliced pair behind port-preserving NATs', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({ transport: 'stream', splice: true, autoPunch: false });
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs(60));
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  it('still punches a direct TCP path (signalled over the circuit), which then carries the tunnel', async () => {
    expect(await c.a.request('connect', { node: 'b' })).toBe('relayed');
    const remoteOf = async (node: string) =>
      (await c.a.request<Stats>('stats')).status.find((s) => s.node === node)?.remoteAddr;
    await waitFor(
      'A tunnel on the splice',
      async () => (await remoteOf('b'))?.includes(`/tcp/${RELAY_SPLICE_PORT}/`),
      30_000,
    );
    expect(await c.a.request('punch', { node: 'b' })).toBe('hole-punched');
    const before = (await c.b.request<Stats>('stats')).rx.a?.frames ?? 0;
    await c.a.request('send', { node: 'b', count: 50, size: 4096 });
    await waitFor('frames at B', async () => ((await c.b.request<Stats>('stats')).rx.a?.frames ?? 0) - before >= 50);
    expect(await remoteOf('b')).toContain(`/ip4/${c.topo.siteB.wanIp}/`);
  }, 120_000);
});
