// The UDP path ladder across real NATs with the native UDP data socket: two NAT'd nodes move
// from the relayed stream to a punched UDP session by themselves, a public peer is reached
// over UDP directly, and when site A's router drops UDP the pair falls back to the stream
// tunnel and keeps carrying traffic, then returns to UDP once it answers again.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OverlayPeerStatus } from '../../../overlay/overlay.ts';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../../support/overlay-cluster.ts';
import { setUdpBlockedAtA } from '../../support/overlay-topology.ts';

interface Stats {
  rx: Record<string, { frames: number; packets: number; bad: number }>;
  status: OverlayPeerStatus[];
  counters: {
    pathChanges: number;
    udp?: {
      sessions: {
        handshakesInitiated: number;
        handshakesAccepted: number;
        handshakeFailures: Record<string, number>;
        candidatesRefused: number;
      };
      paths: { probesSent: number; probeReplies: number; switches: number; badControl: number };
    };
  };
}

const delivered = (s: Stats, node: string) => (s.rx[node]?.frames ?? 0) + (s.rx[node]?.packets ?? 0);

describe('UDP sessions and the path ladder through NATs', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({ udp: true, publicPeer: true });
    c = await pending;
  }, 180_000);
  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail') {
      console.error(c?.logs(80));
      const dump = process.env.OVERLAY_TEST_DUMP;
      if (dump) {
        const [sa, sb] = await Promise.all([c.a.request('stats'), c.b.request('stats')]);
        (await import('node:fs')).writeFileSync(dump, `${c.logs(300)}\n${JSON.stringify({ sa, sb }, null, 1)}`);
      }
    }
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  it('two NATed nodes go from the relayed stream to a punched UDP session and carry packets both ways', async () => {
    expect(await c.a.request('connect', { node: 'b' })).toBe('relayed');
    await waitFor('udp-punched at A', async () => (await c.a.request('path', { node: 'b' })) === 'udp-punched', 30_000);
    await waitFor('udp-punched at B', async () => (await c.b.request('path', { node: 'a' })) === 'udp-punched', 10_000);
    const statusA = (await c.a.request<Stats>('stats')).status.find((s) => s.node === 'b');
    // B's NAT kept B's own port: the session runs to B's public address and punch port.
    expect(statusA?.remoteAddr).toBe(`udp://${c.topo.siteB.wanIp}:${c.b.punchPort}`);

    await c.a.request('send-packets', { node: 'b', count: 300, size: 1200 });
    await c.b.request('send-packets', { node: 'a', count: 100, size: 1200 });
    await waitFor('300 packets at B', async () => ((await c.b.request<Stats>('stats')).rx.a?.packets ?? 0) >= 300);
    await waitFor('100 packets at A', async () => ((await c.a.request<Stats>('stats')).rx.b?.packets ?? 0) >= 100);
    expect((await c.b.request<Stats>('stats')).rx.a?.bad).toBe(0);
    const counters = (await c.a.request<Stats>('stats')).counters;
    expect(counters.udp?.paths.probeReplies).toBeGreaterThan(0);
    const events = await c.a.request<Array<{ node: string; to: string }>>('path-events');
    expect(events.filter((e) => e.node === 'b').map((e) => e.to)).toContain('udp-punched');
  });

  it('reaches a public peer over UDP directly', async () => {
    await c.a.request('connect', { node: 'pub' });
    await waitFor('udp-direct at A', async () => (await c.a.request('path', { node: 'pub' })) === 'udp-direct', 30_000);
    await c.a.request('send-packets', { node: 'pub', count: 50, size: 1200 });
    await waitFor('packets at pub', async () => ((await c.pub!.request<Stats>('stats')).rx.a?.packets ?? 0) >= 50);
    const statusA = (await c.a.request<Stats>('stats')).status.find((s) => s.node === 'pub');
    expect(statusA?.remoteAddr).toBe(`udp://${c.topo.pub.ip}:${c.pub!.punchPort}`);
  });

  it('falls back to the stream tunnel when the router drops UDP, keeps delivering, and returns to UDP', async () => {
    await c.a.request('connect', { node: 'b' });
    await waitFor('udp-punched at A', async () => (await c.a.request('path', { node: 'b' })) === 'udp-punched', 30_000);
    await c.a.request('flow-start', { node: 'b', intervalMs: 10, size: 1000 });
    try {
      const before = delivered(await c.b.request<Stats>('stats'), 'a');
      await waitFor('flow over UDP', async () => delivered(await c.b.request<Stats>('stats'), 'a') > before + 50);
      await setUdpBlockedAtA(c.topo, true);
      try {
        const path = await waitFor(
          'A off UDP',
          async () => {
            const p = await c.a.request<string>('path', { node: 'b' });
            return !p.startsWith('udp') && p !== 'none' && p;
          },
          30_000,
        );
        expect(['relayed', 'hole-punched']).toContain(path);
        const atFallback = delivered(await c.b.request<Stats>('stats'), 'a');
        await waitFor(
          'flow continuing on the stream',
          async () => delivered(await c.b.request<Stats>('stats'), 'a') > atFallback + 50,
          20_000,
        );
        expect((await c.a.request('path', { node: 'b' })) as string).not.toMatch(/^udp/);
      } finally {
        await setUdpBlockedAtA(c.topo, false);
      }
      await waitFor('back on UDP', async () => (await c.a.request('path', { node: 'b' })) === 'udp-punched', 60_000);
      const afterReturn = delivered(await c.b.request<Stats>('stats'), 'a');
      await waitFor(
        'flow over UDP again',
        async () => delivered(await c.b.request<Stats>('stats'), 'a') > afterReturn + 50,
      );
      const s = await c.a.request<Stats>('stats');
      expect(s.counters.udp?.paths.switches).toBeGreaterThanOrEqual(3);
      expect((await c.b.request<Stats>('stats')).rx.a?.bad).toBe(0);
    } finally {
      await c.a.request('flow-stop', { node: 'b' });
    }
  }, 180_000);

  // Last: the rogue handshake replaces A's session at B.
  it('refuses to probe candidates that are not the peer’s own addresses, and counts them', async () => {
    const before = (await c.b.request<Stats>('stats')).counters.udp?.sessions.candidatesRefused ?? 0;
    const answer = await c.a.request<{ accepted: boolean }>('session-hello', {
      node: 'b',
      endpoints: [
        { ip: c.topo.stranger.ip, port: 53 }, // a third party on the internet
        { ip: c.topo.siteA.wanIp, port: c.a.punchPort }, // A's own public address: fine
      ],
    });
    expect(answer.accepted).toBe(true);
    const after = (await c.b.request<Stats>('stats')).counters.udp?.sessions.candidatesRefused ?? 0;
    expect(after - before).toBe(1);
  });
});
