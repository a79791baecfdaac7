// UDP sessions with a symmetric NAT (MASQUERADE --random-fully) on site B: probing cannot
// find a path (each destination gets another random port, and A's router filters by port),
// so the pair stays on the stream tunnel, keeps carrying traffic, and the probing it spends
// is bounded and counted (birthday-style probing for this case is future work).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OverlayPeerStatus } from '../../../overlay/overlay.ts';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../../support/overlay-cluster.ts';

interface Stats {
  rx: Record<string, { frames: number; packets: number; bad: number }>;
  status: OverlayPeerStatus[];
  natKind?: string;
  counters: {
    udp?: {
      sessions: { handshakesInitiated: number; handshakesAccepted: number };
      paths: { probesSent: number; switches: number; attempts: number; failures: Record<string, number> };
    };
  };
}

describe('UDP with a symmetric NAT on one site', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({ randomFullyB: true, udp: true });
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs(60));
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  it('stays on the relayed stream, carries traffic, and bounds its probing', async () => {
    expect(await c.a.request('connect', { node: 'b' })).toBe('relayed');
    await c.a.request('flow-start', { node: 'b', intervalMs: 20, size: 1000 });
    const started = Date.now();
    try {
      await waitFor('a UDP session set up', async () => {
        const s = await c.a.request<Stats>('stats');
        // One with the relay (A asks it for its mapping), one with B.
        return (
          (s.counters.udp?.sessions.handshakesInitiated ?? 0) + (s.counters.udp?.sessions.handshakesAccepted ?? 0) >= 2
        );
      });
      // Longer than the fast probe burst (5 s).
      await new Promise((r) => setTimeout(r, 8000));
      expect(await c.a.request('path', { node: 'b' })).toBe('relayed');
      expect(await c.b.request('path', { node: 'a' })).toBe('relayed');
    } finally {
      await c.a.request('flow-stop', { node: 'b' });
    }
    const [sa, sb] = await Promise.all([c.a.request<Stats>('stats'), c.b.request<Stats>('stats')]);
    expect(sb.rx.a?.frames ?? 0).toBeGreaterThan(100);
    expect(sb.rx.a?.bad).toBe(0);
    // The only carrier switches are to the reflector (the relay, public: UDP straight to it).
    const onUdp = sa.status.filter((s) => s.node !== 'b' && s.path.startsWith('udp')).length;
    expect(sa.counters.udp?.paths.switches).toBe(onUdp);
    // The attempt with B was counted as unanswered; B's own NAT is endpoint-dependent but one
    // reflector (the relay) cannot tell: unknown, and B offers no reflected mapping.
    expect(sa.counters.udp?.paths.failures.unanswered ?? 0).toBeGreaterThanOrEqual(1);
    expect(['unknown', 'endpoint-dependent']).toContain(sb.natKind);
    // 100 ms × a few candidates for 5 s, then one round every 2 s: a few hundred at most.
    const seconds = (Date.now() - started) / 1000;
    const probes = sa.counters.udp?.paths.probesSent ?? 0;
    expect(probes).toBeGreaterThan(0);
    expect(probes).toBeLessThan(40 * seconds);
  }, 60_000);
});
