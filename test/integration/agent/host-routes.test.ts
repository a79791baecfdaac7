// The agent's pod routes against a real kernel, in a namespace this file creates: the
// reconciler manages device routes inside the cluster CIDRs and never mistakes the
// `unreachable` fallback routes (IPv6 lists them on `lo`) for pod routes of its own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ensureFallbackRoutes,
  FALLBACK_METRIC,
  listPodRoutes,
  reconcileRoutes,
  removeFallbackRoutes,
} from '../../../agent/host-routes.ts';
import { run } from '../../../common/exec.ts';
import { iproute2HostNet } from '../../../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';

const prefix = runPrefix('emhr');
const ns = `${prefix}n`;
const dev = `${prefix}t`;
const net = iproute2HostNet({ netns: ns });
const clusterCidrs = ['10.76.0.0/16', 'fd76::/48'];

beforeAll(async () => {
  await createNetns(ns);
  await run('ip', ['-n', ns, 'tuntap', 'add', 'dev', dev, 'mode', 'tun']);
  await net.configureInterface({ dev, address: ['10.76.0.1/32', 'fd76::1/128'] });
});

afterAll(async () => {
  await deleteNetns(ns);
});

describe('host routes', () => {
  it('reconciles pod routes beside the fallback routes, and removes each kind on its own', async () => {
    await ensureFallbackRoutes(clusterCidrs, net);
    // Only the IPv4 cluster CIDR gets a TUN route (as when this node holds no IPv6 block).
    const desired = [
      { dst: '10.76.0.0/16', dev, src: '10.76.0.1' },
      { dst: '10.76.9.0/24', dev },
    ];
    expect(await reconcileRoutes(desired, clusterCidrs, net)).toEqual({ replaced: 2, removed: [] });
    expect(await reconcileRoutes(desired, clusterCidrs, net)).toEqual({ replaced: 0, removed: [] });
    expect(await listPodRoutes(clusterCidrs, net)).toEqual(expect.arrayContaining(desired));
    expect(await listPodRoutes(clusterCidrs, net)).toHaveLength(2);

    // An empty desired set (uninstall) removes the pod routes and leaves the fallbacks to their own remover.
    const { removed } = await reconcileRoutes([], clusterCidrs, net);
    expect(removed.map((r) => r.dst).sort()).toEqual(['10.76.0.0/16', '10.76.9.0/24']);
    const unreachable = (await net.listTableRoutes()).filter((r) => r.type === 'unreachable');
    expect(unreachable.map((r) => r.dst).sort()).toEqual(['10.76.0.0/16', 'fd76::/48']);
    expect(await removeFallbackRoutes(clusterCidrs, net)).toEqual([
      `unreachable 10.76.0.0/16 metric ${FALLBACK_METRIC}`,
      `unreachable fd76::/48 metric ${FALLBACK_METRIC}`,
    ]);
    const left = (await net.listTableRoutes()).filter((r) => r.protocol !== 'kernel');
    expect(left.filter((r) => r.dst.startsWith('10.76.') || r.dst.startsWith('fd76:'))).toEqual([]);
  });
});
