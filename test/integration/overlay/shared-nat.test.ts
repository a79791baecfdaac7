// Two nodes behind ONE NAT both punch to a peer behind another NAT. With one cluster-wide
// punch port the second node's (src, dst) tuple collides at the NAT and it stays relayed;
// with a port per node, both get their own direct connection. The punch responder also
// refuses offers whose address is not where the relay sees the leader, and rate-limits.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { OverlayPeerStatus } from '../../../overlay/overlay.ts';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../../support/overlay-cluster.ts';

interface Stats {
  rx: Record<string, { frames: number; bad: number }>;
  status: OverlayPeerStatus[];
  counters: {
    punch: { attempts: number; successes: number; failures: Record<string, number> };
    observed: { answered: number; refused: number };
  };
}

describe('two nodes behind one NAT', () => {
  let c: OverlayCluster;
  let pending: Promise<OverlayCluster> | undefined;
  beforeAll(async () => {
    pending = createOverlayCluster({ secondNodeA: true });
    c = await pending;
  }, 180_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(c?.logs());
  });
  afterAll(async () => {
    await (await pending?.catch(() => undefined))?.destroy();
  }, 60_000);

  it('every node punches from its own port', () => {
    const ports = [c.a.punchPort, c.a2!.punchPort, c.b.punchPort, c.relay.punchPort];
    expect(ports.every((p) => p > 0)).toBe(true);
    expect(new Set(ports).size).toBe(ports.length);
  });

  it('both get a hole-punched path to the peer behind the other NAT, and carry frames', async () => {
    const a2 = c.a2!;
    expect(await c.a.request('connect', { node: 'b' })).toBe('relayed');
    expect(await a2.request('connect', { node: 'b' })).toBe('relayed');
    for (const [p, name] of [
      [c.a, 'a'],
      [a2, 'a2'],
    ] as const) {
      await waitFor(
        `hole-punched path ${name} → b`,
        async () => (await p.request('path', { node: 'b' })) === 'hole-punched',
        40_000,
      );
      await waitFor(
        `hole-punched path b → ${name}`,
        async () => (await c.b.request('path', { node: name })) === 'hole-punched',
        10_000,
      );
    }
    // B sees both through site A's public address, each from that node's own port.
    const statusB = (await c.b.request<Stats>('stats')).status;
    const remoteOf = (node: string) => statusB.find((s) => s.node === node)?.remoteAddr ?? '';
    expect(remoteOf('a')).toMatch(new RegExp(`^/ip4/203\\.0\\.113\\.1/tcp/${c.a.punchPort}/p2p/`));
    expect(remoteOf('a2')).toMatch(new RegExp(`^/ip4/203\\.0\\.113\\.1/tcp/${a2.punchPort}/p2p/`));

    await c.a.request('send', { node: 'b', count: 50, size: 16_000 });
    await a2.request('send', { node: 'b', count: 50, size: 16_000 });
    await c.b.request('send', { node: 'a', count: 20, size: 16_000 });
    await c.b.request('send', { node: 'a2', count: 20, size: 16_000 });
    await waitFor('frames from a and a2 at b', async () => {
      const rx = (await c.b.request<Stats>('stats')).rx;
      return (rx.a?.frames ?? 0) >= 50 && (rx.a2?.frames ?? 0) >= 50;
    });
    await waitFor('frames at a', async () => ((await c.a.request<Stats>('stats')).rx.b?.frames ?? 0) >= 20);
    await waitFor('frames at a2', async () => ((await a2.request<Stats>('stats')).rx.b?.frames ?? 0) >= 20);
    const rxB = (await c.b.request<Stats>('stats')).rx;
    expect(rxB.a?.bad).toBe(0);
    expect(rxB.a2?.bad).toBe(0);
  });

  it('refuses a punch offer aimed at an address the peer is not seen from, and counts it', async () => {
    // a2 plays a hostile member: it asks B to punch towards the stranger's address (a third
    // party on the internet) instead of its own NAT's.
    const before = (await c.b.request<Stats>('stats')).counters.punch.failures['address-mismatch'] ?? 0;
    const answer = await c.a2!.request<{ error?: string }>('punch-offer', {
      node: 'b',
      ip: c.topo.stranger.ip,
      port: 22,
    });
    expect(answer.error).toMatch(/offered address 203\.0\.113\.66 is not where the peer is seen from/);
    const after = (await c.b.request<Stats>('stats')).counters.punch.failures['address-mismatch'] ?? 0;
    expect(after).toBe(before + 1);
  });

  it('runs one punch per peer at a time: offers while one runs are refused at once', async () => {
    // Offers with the right address but a port nobody answers on: the admitted one keeps B
    // sending SYNs for seconds; the ones that arrive meanwhile must not start more.
    const before = (await c.b.request<Stats>('stats')).counters.punch;
    const answers: Array<{ error?: string; ip?: string }> = [];
    for (let i = 0; i < 5; i++) {
      answers.push(await c.a2!.request('punch-offer', { node: 'b', ip: c.topo.siteA.wanIp, port: 9 }));
    }
    expect(answers[0]?.error).toBeUndefined();
    expect(answers[0]?.ip).toBe(c.topo.siteB.wanIp);
    expect(answers.slice(1).every((a) => a.error?.includes('busy'))).toBe(true);
    const after = (await c.b.request<Stats>('stats')).counters.punch;
    expect(after.attempts - before.attempts).toBe(1);
    expect((after.failures.busy ?? 0) - (before.failures.busy ?? 0)).toBe(4);
  }, 60_000);
});
