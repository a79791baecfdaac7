// A public node sends first to a node behind NAT (no tunnel exists yet in either direction).
// The relay reaches the NAT'd node over the connection that node holds for its reservation;
// a public non-relay node goes through the relay, then the NAT'd node dials it back directly.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OverlayPeerStatus } from '../../../overlay/overlay.ts';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../../support/overlay-cluster.ts';

interface Stats {
  rx: Record<string, { frames: number; bytes: number; bad: number }>;
  status: OverlayPeerStatus[];
}

describe('public node → NAT’d node, the public side first', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    // No background punching: A and B never talk here, and the paths under test stay put.
    pending = createOverlayCluster({ publicPeer: true, autoPunch: false });
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs());
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  const rxFrom = async (at: OverlayCluster['a'], from: string) => (await at.request<Stats>('stats')).rx[from];

  it('the relay opens a tunnel to A over A’s reservation connection and the bytes arrive', async () => {
    expect(await c.relay.request('path', { node: 'a' })).toBe('none');
    const path = await c.relay.request<string>('connect', { node: 'a' });
    expect(path).toBe('direct');
    await c.relay.request('send', { node: 'a', count: 100, size: 16_000 });
    await waitFor('100 frames from the relay at A', async () => ((await rxFrom(c.a, 'relay'))?.frames ?? 0) >= 100);
    expect((await rxFrom(c.a, 'relay'))?.bad).toBe(0);
    // The tunnel rides A's own outbound connection to the relay: no new inbound dial through A's NAT.
    const status = (await c.relay.request<Stats>('stats')).status.find((s) => s.node === 'a');
    expect(status?.remoteAddr).toMatch(/^\/ip4\/203\.0\.113\.1\/tcp\//);
    // And A answers on the same tunnel.
    expect(await c.a.request('path', { node: 'relay' })).toBe('direct');
    await c.a.request('send', { node: 'relay', count: 20, size: 4000 });
    await waitFor('20 frames from A at the relay', async () => ((await rxFrom(c.relay, 'a'))?.frames ?? 0) >= 20);
  });

  it('a public non-relay node reaches B first through the relay, then directly after B dials back', async () => {
    expect(await c.pub?.request('path', { node: 'b' })).toBe('none');
    const path = await c.pub?.request<string>('connect', { node: 'b' });
    expect(['relayed', 'direct']).toContain(path);
    await c.pub?.request('send', { node: 'b', count: 100, size: 16_000 });
    await waitFor('100 frames from pub at B', async () => ((await rxFrom(c.b, 'pub'))?.frames ?? 0) >= 100);
    await waitFor('direct path at pub', async () => (await c.pub?.request('path', { node: 'b' })) === 'direct', 15_000);
    await c.pub?.request('send', { node: 'b', count: 100, size: 16_000 });
    await waitFor('200 frames from pub at B', async () => ((await rxFrom(c.b, 'pub'))?.frames ?? 0) >= 200);
    expect((await rxFrom(c.b, 'pub'))?.bad).toBe(0);
    const status = (await c.pub?.request<Stats>('stats'))?.status.find((s) => s.node === 'b');
    expect(status?.remoteAddr).not.toContain('p2p-circuit');
  });
});
