// The overlay across two NATs: relay first, then a hole-punched direct connection,
// fallback to the relay when the direct path is cut. Real libp2p, real iptables NAT,
// everything inside namespaces this test creates.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OverlayPeerStatus } from '../../../overlay/overlay.ts';
import {
  createOverlayCluster,
  LISTEN_PORT,
  type OverlayCluster,
  PUNCH_PORT,
  waitFor,
} from '../../support/overlay-cluster.ts';
import { OverlayPeerProcess } from '../../support/overlay-peer-client.ts';
import { setDirectPathCut } from '../../support/overlay-topology.ts';

interface Stats {
  rx: Record<string, { frames: number; bytes: number; bad: number }>;
  status: OverlayPeerStatus[];
  counters: {
    punch: { attempts: number; successes: number; failures: Record<string, number> };
    gateDenied: Record<string, number>;
  };
  reservations: string[];
  connections: Array<{ peer: string; remoteAddr: string; status: string }>;
}

describe('overlay through two NATs', () => {
  let c: OverlayCluster;
  // Kept so afterAll can tear the cluster down even when beforeAll timed out mid-way.
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster();
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs());
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  it('carries frames A→B over the relay, then over a hole-punched direct connection', async () => {
    const path = await c.a.request<string>('connect', { node: 'b' });
    expect(path).toBe('relayed');
    const sent = await c.a.request<{ sent: number }>('send', { node: 'b', count: 200, size: 16_000 });
    expect(sent.sent).toBe(200);
    const rxRelayed = await waitFor('200 frames at B', async () => {
      const s = await c.b.request<Stats>('stats');
      return (s.rx.a?.frames ?? 0) >= 200 && s;
    });
    expect(rxRelayed.rx.a?.bad).toBe(0);

    // The punch runs in the background; then the tunnel moves to the direct connection.
    await waitFor(
      'hole-punched path at A',
      async () => (await c.a.request('path', { node: 'b' })) === 'hole-punched',
      30_000,
    );
    await waitFor(
      'hole-punched path at B',
      async () => (await c.b.request('path', { node: 'a' })) === 'hole-punched',
      10_000,
    );
    const statusA = (await c.a.request<Stats>('stats')).status.find((s) => s.node === 'b');
    // B's own punch port, as its NAT (port-preserving MASQUERADE) kept it.
    expect(c.b.punchPort).toBeGreaterThan(0);
    expect(statusA?.remoteAddr).toMatch(new RegExp(`^/ip4/203\\.0\\.113\\.2/tcp/${c.b.punchPort}/p2p/`));
    expect(statusA?.remoteAddr).not.toContain('p2p-circuit');

    await c.a.request('send', { node: 'b', count: 200, size: 16_000 });
    await c.b.request('send', { node: 'a', count: 50, size: 16_000 });
    await waitFor('all frames at B', async () => ((await c.b.request<Stats>('stats')).rx.a?.frames ?? 0) >= 400);
    await waitFor('all frames at A', async () => ((await c.a.request<Stats>('stats')).rx.b?.frames ?? 0) >= 50);
    const final = await c.b.request<Stats>('stats');
    expect(final.rx.a?.bad).toBe(0);
    expect((await c.a.request<Stats>('stats')).counters.punch.successes).toBeGreaterThanOrEqual(1);
  });

  it('falls back to the relay within 5 s when the direct path is cut', async () => {
    expect(await c.a.request('path', { node: 'b' })).toBe('hole-punched');
    await c.a.request('flow-start', { node: 'b', intervalMs: 10, size: 1200 });
    try {
      await waitFor('flow running', async () => ((await c.b.request<Stats>('stats')).rx.a?.frames ?? 0) > 450);
      await setDirectPathCut(c.topo, true);
      const cutAt = Date.now();
      try {
        await waitFor('relayed path at A', async () => (await c.a.request('path', { node: 'b' })) === 'relayed', 5000);
        const atSwitch = (await c.b.request<Stats>('stats')).rx.a?.frames ?? 0;
        await waitFor(
          'frames flowing again over the relay',
          async () => ((await c.b.request<Stats>('stats')).rx.a?.frames ?? 0) > atSwitch + 10,
          5000,
        );
        const resumedMs = Date.now() - cutAt;
        expect(resumedMs).toBeLessThan(5000);
        const statusA = (await c.a.request<Stats>('stats')).status.find((s) => s.node === 'b');
        expect(statusA?.remoteAddr).toContain('/p2p-circuit/');
        expect((await c.b.request<Stats>('stats')).rx.a?.bad).toBe(0);
      } finally {
        await setDirectPathCut(c.topo, false);
      }
    } finally {
      await c.a.request('flow-stop', { node: 'b' });
    }
  });

  it('keeps a peer that is not in the directory out: no connection, no reservation, no relaying', async () => {
    const keyDir = await mkdtemp(join(tmpdir(), `${c.topo.prefix}stranger-`));
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
      // The stranger knows the cluster (its own gate lets it try); the cluster does not know it.
      await stranger.request('directory', { nodes: c.nodes });
      const deniedBefore = (await c.relay.request<Stats>('stats')).counters.gateDenied;
      await expect(stranger.request('connect', { node: 'relay' })).rejects.toThrow();
      await expect(stranger.request('connect', { node: 'b' })).rejects.toThrow(/relay/);
      await new Promise((r) => setTimeout(r, 3000));
      const s = await stranger.request<Stats>('stats');
      expect(s.reservations).toEqual([]);
      expect(s.connections.filter((x) => x.status === 'open')).toEqual([]);
      const relayStats = await c.relay.request<Stats>('stats');
      expect(relayStats.counters.gateDenied.inbound ?? 0).toBeGreaterThan(deniedBefore.inbound ?? 0);
      expect(relayStats.connections.map((x) => x.peer)).not.toContain(stranger.peerId);
      // B never saw it either.
      const bStats = await c.b.request<Stats>('stats');
      expect(bStats.connections.map((x) => x.peer)).not.toContain(stranger.peerId);
    } finally {
      await stranger.stop();
      await rm(keyDir, { recursive: true, force: true });
    }
  });

  it('re-makes the relay reservations after a relay restart, and relaying works again', async () => {
    await c.restartRelay();
    for (const p of [c.a, c.b]) {
      await waitFor(
        `${p.config.name} reservation on the restarted relay`,
        async () => {
          const s = await p.request<Stats>('stats');
          return (
            s.reservations.includes('relay') && s.connections.some((x) => x.remoteAddr.startsWith('/ip4/203.0.113.10/'))
          );
        },
        20_000,
      );
    }
    // Relaying through the new relay process works: cut the direct path so A must use it.
    await setDirectPathCut(c.topo, true);
    try {
      await waitFor(
        'A back on the relay',
        async () => (await c.a.request('path', { node: 'b' })) !== 'hole-punched',
        10_000,
      );
      const before = (await c.b.request<Stats>('stats')).rx.a?.frames ?? 0;
      await c.a.request('send', { node: 'b', count: 50, size: 16_000 });
      await waitFor('frames through the restarted relay', async () => {
        const s = await c.b.request<Stats>('stats');
        return (s.rx.a?.frames ?? 0) >= before + 50;
      });
      expect(await c.a.request('path', { node: 'b' })).toBe('relayed');
    } finally {
      await setDirectPathCut(c.topo, false);
    }
  });
});
