import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../../../agent/config.ts';
import type { NodeApi } from '../../../agent/kube.ts';
import { NodeWatch } from '../../../agent/node-watch.ts';
import type { PodCidrAuthority } from '../../../agent/pod-cidr-authority.ts';
import { resolveIdentity } from '../../../agent/self-node.ts';
import { silentLogger } from '../../../common/log.ts';
import { Forwarder } from '../../../dataplane/forwarder.ts';
import type { PacketIO } from '../../../dataplane/types.ts';
import { PeerDirectory } from '../../../overlay/directory.ts';
import { authorityWith, fakeInformer, IDS, node, peerStack } from '../../support/peer-nodes.ts';

function setup() {
  const directory = new PeerDirectory();
  const events: string[] = [];
  directory.on('peer:added', (p) => events.push(`added ${p.node}`));
  directory.on('peer:updated', (p) => events.push(`updated ${p.node}`));
  directory.on('peer:removed', (p) => events.push(`removed ${p.node}`));
  const selfSeen: string[] = [];
  const authority = authorityWith([]);
  const watch = new NodeWatch({
    api: {} as NodeApi,
    selfName: 'me',
    directory,
    authority,
    onSelf: (n) => selfSeen.push(n.metadata!.name!),
    logger: silentLogger(),
  });
  return { directory, authority, watch, events, selfSeen };
}

describe('NodeWatch', () => {
  it('feeds Nodes to the peer table, which reports only real changes', () => {
    const t = setup();
    t.watch.upsert(node('peer'));
    expect(t.events).toEqual(['added peer']);
    // The same object again changes nothing.
    t.watch.upsert(node('peer'));
    expect(t.events).toEqual(['added peer']);
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24' }));
    expect(t.events.at(-1)).toBe('updated peer');
    expect(t.directory.get('peer')?.podCidrs).toEqual(['10.244.9.0/24']);
    // A new InternalIP (dual-stack next hop) is part of the peer: a change like any other.
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24', ips: ['192.168.1.2', 'fd00::2', 'not-an-ip'] }));
    expect(t.events).toHaveLength(3);
    expect(t.directory.get('peer')?.internalIps).toEqual(['192.168.1.2', 'fd00::2']);
    t.watch.remove(node('peer'));
    expect(t.events.at(-1)).toBe('removed peer');
    expect(t.directory.list()).toEqual([]);
  });

  it("feeds every Node's spec.podCIDRs, its own too, to the authority", () => {
    const t = setup();
    t.watch.upsert({ ...node('peer'), spec: { podCIDRs: ['10.244.5.0/24'] } });
    t.watch.upsert({ ...node('me'), spec: { podCIDR: '10.244.6.0/24' } });
    expect(t.authority.assigned('peer')).toEqual(['10.244.5.0/24']);
    expect(t.authority.assigned('me')).toEqual(['10.244.6.0/24']);
    t.watch.remove(node('peer'));
    expect(t.authority.assigned('peer')).toEqual([]);
  });

  it('keeps its own Node out of the peers but reports it', () => {
    const t = setup();
    t.watch.upsert(node('me'));
    expect(t.directory.list()).toEqual([]);
    expect(t.events).toEqual([]);
    expect(t.selfSeen).toEqual(['me']);
  });

  it('ignores Nodes whose agent has not published itself, without throwing', () => {
    const t = setup();
    t.watch.upsert({ metadata: { name: 'fresh' }, status: {} });
    expect(t.directory.list()).toEqual([]);
    expect(t.directory.ignored.get('fresh')).toMatch(/peer-id/);
  });

  it('counts, and survives, a Node whose handling throws', async () => {
    const t = setup();
    const informer = fakeInformer([]);
    const authority = t.authority;
    authority.setNodePodCidrs = () => {
      throw new Error('a bug nobody foresaw');
    };
    const watch = new NodeWatch({
      api: { nodeInformer: () => informer } as unknown as NodeApi,
      selfName: 'me',
      directory: t.directory,
      authority,
      logger: silentLogger(),
    });
    await watch.start();
    expect(() => informer.emit('add', node('peer'))).not.toThrow();
    expect(watch.handlerErrors).toBe(1);
    await watch.stop();
  });
});

describe('NodeWatch with the peer table, its routes and the real forwarder: hostile annotations', () => {
  const tun: PacketIO = { offload: false, onBatch: () => undefined, write: (b) => b.length };

  /** Node informer → table → route verification → forwarder, as the agent wires them. */
  function stack(
    informer: ReturnType<typeof fakeInformer>,
    authority: PodCidrAuthority,
    directory = new PeerDirectory(),
  ) {
    const forwarder = new Forwarder({ tun, localCidrs: ['10.244.0.0/24'], logger: silentLogger() });
    const parts = peerStack({ informer, authority, forwarder, localCidrs: ['10.244.0.0/24'], directory });
    return { ...parts, forwarder };
  }

  it('refuses pod CIDRs the forwarder would not parse, and keeps serving every other Node', async () => {
    const good = node('good', { cidr: '10.244.2.0/24' });
    // ipaddr.js accepts all of these; the forwarder's parser does not. One of them on one
    // Node took down every agent of a 9-node lab before this was checked.
    const hostile = ['10.1/16', '0xa.0.0.0/8', '167772161/8', '10.244.3.7/24', '010.244.3.0/24'].map((cidr, i) =>
      node(`bad-${i}`, { cidr, peerId: IDS[i]! }),
    );
    const informer = fakeInformer([...hostile, good]);
    const t = stack(informer, authorityWith([['10.244.2.0/24', 'good']]));
    await t.watch.start();
    expect(t.directory.list().map((p) => p.node)).toEqual(['good']);
    for (const n of hostile) expect(t.directory.ignored.get(n.metadata!.name!)).toMatch(/pod-cidrs/);
    expect(Object.keys(t.forwarder.stats().peers)).toEqual(['good']);
    expect(t.directory.routesOf('good')).toEqual(['10.244.2.0/24']);
    // An update that turns a good Node bad removes it instead of crashing.
    informer.emit('update', node('good', { cidr: '10.1/16' }));
    expect(t.directory.list()).toEqual([]);
    expect(t.directory.routesOf('good')).toEqual([]);
    expect(Object.keys(t.forwarder.stats().peers)).toEqual([]);
    expect(t.watch.handlerErrors + t.verifier.handlerErrors + t.binding.errors).toBe(0);
    await t.watch.stop();
    t.verifier.stop();
  });

  it('forgets, after a relist, Nodes that vanished while refused (a conflict does not outlive them)', async () => {
    const directory = new PeerDirectory();
    // Before the (re)list: two Nodes in a peer-ID conflict, and one refused outright.
    directory.upsertFromNode({ name: 'gone-a', annotations: node('gone-a').metadata!.annotations! });
    directory.upsertFromNode({ name: 'gone-b', annotations: node('gone-b').metadata!.annotations! });
    directory.upsertFromNode({ name: 'gone-c', annotations: {} });
    expect(directory.conflicts().size).toBe(1);
    const informer = fakeInformer([node('stays', { peerId: IDS[0]! })]);
    const t = stack(informer, authorityWith([['10.244.2.0/24', 'stays']]), directory);
    await t.watch.start();
    expect(directory.knownNodes()).toEqual(['stays']);
    expect(directory.conflicts().size).toBe(0);
    expect(directory.ignored.size).toBe(0);
    expect(directory.routesOf('stays')).toEqual(['10.244.2.0/24']);
    await t.watch.stop();
    t.verifier.stop();
  });
});

describe('resolveIdentity', () => {
  const cfg = (extra: Record<string, unknown> = {}) =>
    agentConfigSchema.parse({ nodeName: 'n1', clusterCidrs: ['10.244.0.0/16'], ...extra });
  const self: V1Node = {
    metadata: { name: 'n1', labels: { 'edgemesh.io/site': 'cloud', 'edgemesh.io/relay': 'true' } },
    status: {
      addresses: [
        { type: 'InternalIP', address: '10.0.0.5' },
        { type: 'ExternalIP', address: '203.0.113.10' },
      ],
    },
  };

  it('takes site, relay role, node IP and announce addresses from the Node when the config leaves them out', () => {
    expect(resolveIdentity(cfg(), self)).toEqual({
      site: 'cloud',
      nodeIp: '10.0.0.5',
      relay: true,
      announce: ['/ip4/203.0.113.10/tcp/4001'],
    });
  });

  it('lets the config override the Node', () => {
    const id = resolveIdentity(
      cfg({ site: 'x', nodeIp: '10.0.0.9', relay: false, overlay: { announce: ['/ip4/198.51.100.1/tcp/4001'] } }),
      self,
    );
    expect(id).toEqual({ site: 'x', nodeIp: '10.0.0.9', relay: false, announce: ['/ip4/198.51.100.1/tcp/4001'] });
  });

  it('falls back to a site of its own and refuses a node without any address', () => {
    const bare: V1Node = {
      metadata: { name: 'n1' },
      status: { addresses: [{ type: 'InternalIP', address: '10.0.0.5' }] },
    };
    expect(resolveIdentity(cfg(), bare)).toMatchObject({ site: 'n1', relay: false, announce: [] });
    expect(() => resolveIdentity(cfg(), { metadata: { name: 'n1' } })).toThrow(/no nodeIp configured/);
  });
});
