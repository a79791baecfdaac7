// Rekeying UDP sessions under traffic through real NATs and the native UDP socket: sessions
// are replaced every 1.5 s while a flow runs; every packet the link accepted arrives intact
// (the responder keeps sending on the old session until the peer uses the new one) and the
// path stays on UDP. (Removal of retired sessions: test/integration/overlay/session-protocol.test.ts.)
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OverlayPeerStatus } from '../../../overlay/overlay.ts';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../../support/overlay-cluster.ts';

interface Stats {
  rx: Record<string, { packets: number; frames: number; bad: number }>;
  counters: {
    udp?: {
      sessions: { handshakesInitiated: number; handshakesAccepted: number; rekeys: number };
      paths: { switches: number };
    };
  };
  status: OverlayPeerStatus[];
}

describe('UDP rekey under traffic', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({ udp: true, udpRekeyAfterMs: 1500 });
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs(80));
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  it('keeps the flow on UDP across several rekeys', async () => {
    const connectedAt = Date.now();
    await c.a.request('connect', { node: 'b' });
    await waitFor('udp-punched at A', async () => (await c.a.request('path', { node: 'b' })) === 'udp-punched', 30_000);
    const start = await c.a.request<Stats>('stats');
    // The status says when the path was taken: after the connect, and no rekey moves it.
    const since = start.status.find((p) => p.node === 'b')?.pathSince;
    expect(since).toBeGreaterThanOrEqual(connectedAt);
    expect(since).toBeLessThanOrEqual(Date.now());
    const rekeysBefore = start.counters.udp?.sessions.rekeys ?? 0;
    await c.a.request('flow-start', { node: 'b', intervalMs: 5, size: 1000 });
    let flow: { sent: number; dropped: number } | undefined;
    try {
      await waitFor(
        'three rekeys at either end',
        async () => {
          const [sa, sb] = await Promise.all([c.a.request<Stats>('stats'), c.b.request<Stats>('stats')]);
          const rekeys = (sa.counters.udp?.sessions.rekeys ?? 0) + (sb.counters.udp?.sessions.rekeys ?? 0);
          return rekeys - rekeysBefore >= 3;
        },
        30_000,
      );
    } finally {
      flow = await c.a.request('flow-stop', { node: 'b' });
    }
    expect(await c.a.request('path', { node: 'b' })).toBe('udp-punched');
    const sent = flow?.sent ?? 0;
    const rx = await waitFor('the flow delivered', async () => {
      const s = (await c.b.request<Stats>('stats')).rx.a;
      return s !== undefined && s.packets + s.frames >= sent && s;
    });
    expect(rx.bad).toBe(0);
    // The carrier never left UDP during the rekeys (one switch: stream → udp at the start).
    // One switch to B (stream → UDP), plus one per reflector reached over UDP (the relay).
    const end = await c.a.request<Stats>('stats');
    const reflectorsOnUdp = end.status.filter((p) => p.node !== 'b' && p.path.startsWith('udp')).length;
    expect(end.counters.udp?.paths.switches).toBe(1 + reflectorsOnUdp);
    expect(end.status.find((p) => p.node === 'b')?.pathSince).toBe(since);
  }, 120_000);
});
