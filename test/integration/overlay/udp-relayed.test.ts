// The udp-relayed rung: both sites behind symmetric NATs (MASQUERADE --random-fully), so no
// probe between A and B can ever be answered directly. The relay node runs a UDP relay; A and
// B bind on it over libp2p, register their receiver indexes, and their sealed session
// datagrams go A → relay → B unopened. The pair must end `udp-relayed`, carry checksummed
// packets, and be back on the relay within 5 s after the relay process restarts.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../../support/overlay-cluster.ts';

interface Stats {
  rx: Record<string, { frames: number; packets: number; bad: number }>;
  counters: {
    udp?: {
      relay?: { grants: number; allocatesSent: number; activated: number };
      paths: { switches: number };
    };
    relayBindings?: { granted: number };
  };
  udpRelay?: { txDatagrams: number; bindings: number; drops: Record<string, number> };
}

describe('UDP through a relay between two symmetric NATs', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({ randomFullyA: true, randomFullyB: true, udp: true, udpRelay: true });
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs(80));
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  const path = (from: OverlayCluster['a'], node: string) => from.request<string>('path', { node });

  it('ends udp-relayed on both sides and carries packets through the relay unopened', async () => {
    expect(await c.a.request('connect', { node: 'b' })).toBe('relayed');
    await c.a.request('flow-start', { node: 'b', intervalMs: 10, size: 1000 });
    let delivered = 0;
    try {
      await waitFor('udp-relayed at A', async () => (await path(c.a, 'b')) === 'udp-relayed', 60_000);
      await waitFor('udp-relayed at B', async () => (await path(c.b, 'a')) === 'udp-relayed', 20_000);
      const before = await c.b.request<Stats>('stats');
      await new Promise((r) => setTimeout(r, 3000));
      const after = await c.b.request<Stats>('stats');
      // Packets (not stream frames) arrived, every checksum intact.
      delivered = (after.rx.a?.packets ?? 0) - (before.rx.a?.packets ?? 0);
      expect(delivered).toBeGreaterThan(100);
      expect(after.rx.a?.bad ?? 0).toBe(0);
      expect(await path(c.a, 'b')).toBe('udp-relayed');
    } finally {
      await c.a.request('flow-stop', { node: 'b' });
    }
    const [sa, sr] = await Promise.all([c.a.request<Stats>('stats'), c.relay.request<Stats>('stats')]);
    expect(sa.counters.udp?.relay?.grants).toBeGreaterThan(0);
    expect(sa.counters.udp?.relay?.allocatesSent).toBeGreaterThan(0);
    expect(sr.counters.relayBindings?.granted).toBeGreaterThanOrEqual(2);
    expect(sr.udpRelay?.bindings).toBe(1);
    // Every packet B got on the session came through the relay (there is no other UDP path).
    expect(sr.udpRelay?.txDatagrams).toBeGreaterThanOrEqual(delivered);
    // The status shows the relay's UDP endpoint as the peer's endpoint.
    const status = (await c.a.request<{ status: Array<{ node: string; remoteAddr?: string }> }>('stats')).status;
    expect(status.find((p) => p.node === 'b')?.remoteAddr).toBe(`udp://${c.topo.relay.ip}:4003`);
  }, 120_000);

  it('is back on the relay within 5 s of the relay process restarting', async () => {
    await c.a.request('flow-start', { node: 'b', intervalMs: 10, size: 1000 });
    try {
      await waitFor('udp-relayed at A', async () => (await path(c.a, 'b')) === 'udp-relayed', 30_000);
      await c.restartRelay();
      const back = Date.now();
      const received = async () => {
        const rx = (await c.b.request<Stats>('stats')).rx.a;
        return (rx?.packets ?? 0) + (rx?.frames ?? 0);
      };
      const base = await received();
      // Traffic (on whatever carrier: the stream relay needs fresh reservations too) …
      await waitFor('packets from A again', async () => (await received()) > base + 50, 30_000);
      const recovered = Date.now() - back;
      console.log(`relay restart: packets flowing again ${recovered} ms after the relay was back`);
      expect(recovered).toBeLessThan(5000);
      // … and through the fresh relay's UDP relay, a new binding.
      await waitFor('udp-relayed again', async () => (await path(c.a, 'b')) === 'udp-relayed', 60_000);
      const sr = await c.relay.request<Stats>('stats');
      expect(sr.udpRelay?.bindings).toBe(1);
      expect(sr.udpRelay?.txDatagrams).toBeGreaterThan(0);
    } finally {
      await c.a.request('flow-stop', { node: 'b' });
    }
  }, 150_000);
});
