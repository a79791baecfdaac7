// With a symmetric NAT (MASQUERADE --random-fully) on site B the punch cannot work: the
// tunnel must stay on the relay, keep working, and count the failed attempt.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../../support/overlay-cluster.ts';

interface Stats {
  rx: Record<string, { frames: number; bad: number }>;
  counters: { punch: { attempts: number; successes: number; failures: Record<string, number> } };
}

describe('overlay with a symmetric NAT on one site', () => {
  let c: OverlayCluster;
  // Kept so afterAll can tear the cluster down even when beforeAll timed out mid-way.
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({ randomFullyB: true });
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs());
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  it('stays relayed and carries traffic both ways', async () => {
    expect(await c.a.request('connect', { node: 'b' })).toBe('relayed');
    await c.a.request('send', { node: 'b', count: 100, size: 16_000 });
    await c.b.request('send', { node: 'a', count: 100, size: 16_000 });
    await waitFor('frames at B', async () => ((await c.b.request<Stats>('stats')).rx.a?.frames ?? 0) >= 100);
    await waitFor('frames at A', async () => ((await c.a.request<Stats>('stats')).rx.b?.frames ?? 0) >= 100);
    // The punch leader tried and failed; whoever led, the failure is counted somewhere.
    const failed = await waitFor(
      'a failed punch attempt',
      async () => {
        const [sa, sb] = await Promise.all([c.a.request<Stats>('stats'), c.b.request<Stats>('stats')]);
        const fails = (s: Stats) => Object.values(s.counters.punch.failures).reduce((x, y) => x + y, 0);
        return fails(sa) + fails(sb) > 0 && { sa, sb };
      },
      30_000,
    );
    expect(failed.sa.counters.punch.successes + failed.sb.counters.punch.successes).toBe(0);
    expect(await c.a.request('path', { node: 'b' })).toBe('relayed');
    expect(await c.b.request('path', { node: 'a' })).toBe('relayed');
    await c.a.request('send', { node: 'b', count: 100, size: 16_000 });
    await waitFor('more frames at B', async () => ((await c.b.request<Stats>('stats')).rx.a?.frames ?? 0) >= 200);
    expect((await c.b.request<Stats>('stats')).rx.a?.bad).toBe(0);
  });
});
