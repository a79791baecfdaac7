import { EventEmitter } from 'node:events';
import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../../../agent/config.ts';
import type { NodeApi } from '../../../agent/kube.ts';
import { NodeWatch } from '../../../agent/node-watch.ts';
import { PodCidrAuthority } from '../../../agent/pod-cidr-authority.ts';
import { resolveIdentity } from '../../../agent/self-node.ts';
import { silentLogger } from '../../../common/log.ts';
import { Forwarder } from '../../../dataplane/forwarder.ts';
import type { PacketIO } from '../../../dataplane/types.ts';
import { blockObjectName } from '../../../ipam/node-blocks.ts';
import { PeerDirectory } from '../../../overlay/directory.ts';

const PEER_ID = '12D3KooWGLmu861KbXD6HjhGKVBSFtR7saza4j8J25nP2RPWHwnp';
/** Distinct valid peer IDs (a directory refuses two Nodes with one ID). */
const IDS = [
  '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK',
  '12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq',
  '12D3KooWSvKm7CjcLgiPcpr2xjZQ3tMF25U3GHoW6vWkN8w9nqNb',
  '12D3KooWQZnbsbQj4tcvZzBW3gpZ5kZq8cKvdAzKhJv1KZFCzMXM',
  '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN',
];

function node(name: string, opts: { cidr?: string; site?: string; ips?: string[]; peerId?: string } = {}): V1Node {
  return {
    metadata: {
      name,
      labels: {},
      annotations: {
        'edgemesh.io/peer-id': opts.peerId ?? PEER_ID,
        'edgemesh.io/multiaddrs': JSON.stringify(['/ip4/192.168.1.2/tcp/4001']),
        'edgemesh.io/pod-cidrs': opts.cidr ?? '10.244.2.0/24',
        'edgemesh.io/site': opts.site ?? 'lan',
        'edgemesh.io/node-ip': '192.168.1.2',
      },
    },
    status: { addresses: (opts.ips ?? ['192.168.1.2']).map((address) => ({ type: 'InternalIP', address })) },
  };
}

/** An IPAMBlock object as the API server returns it. */
function block(cidr: string, owner: string) {
  return {
    apiVersion: 'edgemesh.io/v1alpha1',
    kind: 'IPAMBlock',
    metadata: { name: blockObjectName(cidr) },
    spec: { cidr, node: owner, family: cidr.includes(':') ? 6 : 4 },
  };
}

/** The cluster's view: 10.244.0.0/16, with the given blocks. */
function authorityWith(blocks: Array<[string, string]>): PodCidrAuthority {
  const authority = new PodCidrAuthority(['10.244.0.0/16']);
  for (const [cidr, owner] of blocks) authority.setBlock(block(cidr, owner));
  return authority;
}

const nextTick = () => new Promise((r) => setImmediate(r));

function setup() {
  const directory = new PeerDirectory();
  const calls: string[] = [];
  let changes = 0;
  const selfSeen: string[] = [];
  const watch = new NodeWatch({
    api: {} as NodeApi,
    selfName: 'me',
    directory,
    forwarder: {
      setPeer: (n, cidrs) => {
        calls.push(`set ${n} ${cidrs.join(',')}`);
        return [];
      },
      removePeer: (n) => {
        calls.push(`remove ${n}`);
      },
    },
    authority: authorityWith([
      ['10.244.2.0/24', 'peer'],
      ['10.244.9.0/24', 'peer'],
    ]),
    onChange: () => {
      changes++;
    },
    onSelf: (n) => selfSeen.push(n.metadata!.name!),
    logger: silentLogger(),
  });
  return { directory, watch, calls, changes: () => changes, selfSeen };
}

describe('NodeWatch', () => {
  it('feeds peers to the directory and the forwarder, and signals route changes', () => {
    const t = setup();
    t.watch.upsert(node('peer'));
    expect(t.calls).toEqual(['set peer 10.244.2.0/24']);
    expect(t.changes()).toBe(1);
    // The same object again changes nothing.
    t.watch.upsert(node('peer'));
    expect(t.changes()).toBe(1);
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24' }));
    expect(t.calls.at(-1)).toBe('set peer 10.244.9.0/24');
    expect(t.changes()).toBe(2);
    // A new InternalIP (dual-stack next hop) is part of the peer: a change like any other.
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24', ips: ['192.168.1.2', 'fd00::2', 'not-an-ip'] }));
    expect(t.changes()).toBe(3);
    expect(t.directory.get('peer')?.internalIps).toEqual(['192.168.1.2', 'fd00::2']);
    t.watch.remove(node('peer'));
    expect(t.calls.at(-1)).toBe('remove peer');
    expect(t.directory.list()).toEqual([]);
  });

  it('takes the routes of a peer whose update failed, but keeps the peer (and the link the overlay gave it)', () => {
    const calls: string[] = [];
    const authority = authorityWith([['10.244.2.0/24', 'peer']]);
    let fail = false;
    const verify = authority.verify.bind(authority);
    authority.verify = (n, cidrs) => {
      if (fail) throw new Error('a bug nobody foresaw');
      return verify(n, cidrs);
    };
    const watch = new NodeWatch({
      api: {} as NodeApi,
      selfName: 'me',
      directory: new PeerDirectory(),
      forwarder: {
        setPeer: (n, cidrs) => {
          calls.push(`set ${n} ${cidrs.join(',')}`);
          return [];
        },
        removePeer: (n) => {
          calls.push(`remove ${n}`);
        },
      },
      authority,
      onChange: () => undefined,
      logger: silentLogger(),
    });
    watch.upsert(node('peer'));
    fail = true;
    watch.upsert(node('peer', { cidr: '10.244.9.0/24' }));
    expect(watch.handlerErrors).toBe(1);
    expect(calls).toEqual(['set peer 10.244.2.0/24', 'set peer ']);
  });

  it('keeps its own Node out of the peers but reports it', () => {
    const t = setup();
    t.watch.upsert(node('me'));
    expect(t.directory.list()).toEqual([]);
    expect(t.calls).toEqual([]);
    expect(t.selfSeen).toEqual(['me']);
  });

  it('ignores Nodes whose agent has not published itself, without throwing', () => {
    const t = setup();
    t.watch.upsert({ metadata: { name: 'fresh' }, status: {} });
    expect(t.directory.list()).toEqual([]);
    expect(t.directory.ignored.get('fresh')).toMatch(/peer-id/);
  });
});

/** An informer double: the watch subscribes to it; the test emits the API server's events. */
function fakeInformer(initial: V1Node[]) {
  const events = new EventEmitter();
  const informer = Object.assign(events, {
    start: async () => {
      for (const n of initial) events.emit('add', n);
    },
    stop: async () => undefined,
    list: () => initial,
  });
  return informer;
}

describe('NodeWatch with the real forwarder: hostile annotations', () => {
  const tun: PacketIO = { offload: false, onBatch: () => undefined, write: (b) => b.length };

  it('refuses pod CIDRs the forwarder would not parse, and keeps serving every other Node', async () => {
    const directory = new PeerDirectory();
    const forwarder = new Forwarder({ tun, localCidrs: ['10.244.0.0/24'], logger: silentLogger() });
    const good = node('good', { cidr: '10.244.2.0/24' });
    // ipaddr.js accepts all of these; the forwarder's parser does not. One of them on one
    // Node took down every agent of a 9-node lab before this was checked.
    const hostile = ['10.1/16', '0xa.0.0.0/8', '167772161/8', '10.244.3.7/24', '010.244.3.0/24'].map((cidr, i) =>
      node(`bad-${i}`, { cidr, peerId: IDS[i]! }),
    );
    const informer = fakeInformer([...hostile, good]);
    const watch = new NodeWatch({
      api: { nodeInformer: () => informer } as unknown as NodeApi,
      selfName: 'me',
      directory,
      forwarder,
      authority: authorityWith([['10.244.2.0/24', 'good']]),
      onChange: () => undefined,
      logger: silentLogger(),
    });
    await watch.start();
    expect(directory.list().map((p) => p.node)).toEqual(['good']);
    for (const n of hostile) expect(directory.ignored.get(n.metadata!.name!)).toMatch(/pod-cidrs/);
    expect(Object.keys(forwarder.stats().peers)).toEqual(['good']);
    // An update that turns a good Node bad removes it instead of crashing.
    informer.emit('update', node('good', { cidr: '10.1/16' }));
    expect(directory.list()).toEqual([]);
    expect(Object.keys(forwarder.stats().peers)).toEqual([]);
    expect(watch.handlerErrors).toBe(0);
    await watch.stop();
  });

  it('survives a handler that throws: the event is logged and counted, the peer left without routes', async () => {
    const directory = new PeerDirectory();
    const removed: string[] = [];
    const informer = fakeInformer([]);
    const watch = new NodeWatch({
      api: { nodeInformer: () => informer } as unknown as NodeApi,
      selfName: 'me',
      directory,
      forwarder: {
        setPeer: () => {
          throw new Error('kernel said no');
        },
        removePeer: (n) => {
          removed.push(n);
        },
      },
      authority: authorityWith([]),
      onChange: () => undefined,
      logger: silentLogger(),
    });
    await watch.start();
    expect(() => informer.emit('add', node('peer'))).not.toThrow();
    expect(watch.handlerErrors).toBe(1);
    expect(removed).toEqual(['peer']);
    informer.emit('delete', node('peer'));
    expect(watch.handlerErrors).toBe(1);
    await watch.stop();
  });

  it('forgets, after a relist, Nodes that vanished while refused (a conflict does not outlive them)', async () => {
    const directory = new PeerDirectory();
    // Before the (re)list: two Nodes in a peer-ID conflict, and one refused outright.
    directory.upsertFromNode({ name: 'gone-a', annotations: node('gone-a').metadata!.annotations! });
    directory.upsertFromNode({ name: 'gone-b', annotations: node('gone-b').metadata!.annotations! });
    directory.upsertFromNode({ name: 'gone-c', annotations: {} });
    expect(directory.conflicts().size).toBe(1);
    const informer = fakeInformer([node('stays', { peerId: IDS[0]! })]);
    const watch = new NodeWatch({
      api: { nodeInformer: () => informer } as unknown as NodeApi,
      selfName: 'me',
      directory,
      forwarder: new Forwarder({ tun, localCidrs: [], logger: silentLogger() }),
      authority: authorityWith([['10.244.2.0/24', 'stays']]),
      onChange: () => undefined,
      logger: silentLogger(),
    });
    await watch.start();
    expect(directory.knownNodes()).toEqual(['stays']);
    expect(directory.conflicts().size).toBe(0);
    expect(directory.ignored.size).toBe(0);
    await watch.stop();
  });
});

describe('NodeWatch: a node speaks only for itself', () => {
  const tun: PacketIO = { offload: false, onBatch: () => undefined, write: (b) => b.length };

  function cluster(blocks: Array<[string, string]>, opts: { reportAfterMs?: number } = {}) {
    const directory = new PeerDirectory();
    const forwarder = new Forwarder({ tun, localCidrs: ['10.244.0.0/24'], logger: silentLogger() });
    const authority = authorityWith([['10.244.0.0/24', 'me'], ...blocks]);
    const reported: Array<[string, string[]]> = [];
    let changes = 0;
    const watch = new NodeWatch({
      api: {} as NodeApi,
      selfName: 'me',
      directory,
      forwarder,
      authority,
      onRefused: (n, refused) => reported.push([n, refused.map((r) => r.cidr)]),
      reportRefusalsAfterMs: opts.reportAfterMs ?? 0,
      onChange: () => {
        changes++;
      },
      logger: silentLogger(),
    });
    const routed = () =>
      Object.fromEntries(directory.list().map((p) => [p.node, watch.verifiedCidrs(p.node)] as [string, string[]]));
    return { directory, forwarder, authority, watch, reported, routed, changes: () => changes };
  }

  it('routes only the CIDRs an IPAMBlock or spec.podCIDRs assigns to the announcing node', () => {
    const t = cluster([['10.244.2.0/24', 'good']]);
    t.watch.upsert(node('good', { cidr: '10.244.2.0/24', peerId: IDS[0]! }));
    // Each of these used to be routed to the intruder: another node's block (last writer
    // won), a /32 inside it (longest prefix won), everything, a range outside the cluster
    // (then a host-gw kernel route), this node's own block, and a block nobody assigned it.
    const claims = ['10.244.2.0/24', '10.244.2.7/32', '0.0.0.0/0', '192.168.0.0/16', '10.244.0.0/24', '10.244.77.0/24'];
    t.watch.upsert(node('evil', { cidr: claims.join(','), peerId: IDS[1]! }));
    expect(t.routed()).toEqual({ good: ['10.244.2.0/24'], evil: [] });
    const reasons = Object.fromEntries(
      t.watch
        .refusedCidrs()
        .get('evil')!
        .map((r) => [r.cidr, r.reason]),
    );
    expect(reasons).toEqual({
      '10.244.2.0/24': expect.stringMatching(/no IPAMBlock or spec.podCIDRs assigns it to node evil/),
      '10.244.2.7/32': expect.stringMatching(/assigns it/),
      '0.0.0.0/0': 'outside the cluster CIDRs',
      '192.168.0.0/16': 'outside the cluster CIDRs',
      '10.244.0.0/24': expect.stringMatching(/assigns it/),
      '10.244.77.0/24': expect.stringMatching(/assigns it/),
    });
    expect(t.reported).toEqual([['evil', claims]]);
    // The real forwarder routes nothing to it.
    expect(t.forwarder.stats().refusedCidrs).toEqual({});
    expect(Object.keys(t.forwarder.stats().peers).sort()).toEqual(['evil', 'good']);
  });

  it('takes spec.podCIDRs as authoritative: a block overlapping them is the one refused', () => {
    const t = cluster([['10.244.37.0/24', 'b']]);
    const withSpec = (n: V1Node, podCIDRs: string[]): V1Node => ({ ...n, spec: { podCIDRs } });
    t.watch.upsert(withSpec(node('a', { cidr: '10.244.16.0/20', peerId: IDS[0]! }), ['10.244.16.0/20']));
    expect(t.routed()).toEqual({ a: ['10.244.16.0/20'] });
    // b's block lies inside a's spec.podCIDRs (a block claimed before the controller-manager
    // assigned them): the control plane's word wins, b's block is refused.
    t.watch.upsert(withSpec(node('a', { cidr: '10.244.32.0/20', peerId: IDS[0]! }), ['10.244.32.0/20']));
    t.watch.upsert(node('b', { cidr: '10.244.37.0/24', peerId: IDS[1]! }));
    expect(t.routed()).toEqual({ a: ['10.244.32.0/20'], b: [] });
    expect(t.watch.refusedCidrs().get('b')![0]!.reason).toMatch(/overlaps pod CIDRs assigned to a/);
  });

  it('reports a refusal (the Warning Event) only when it outlasts the grace period', async () => {
    const t = cluster([], { reportAfterMs: 50 });
    // A joining node: its annotations arrive before its IPAMBlock. No event for that moment.
    t.watch.upsert(node('joining', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    t.authority.setBlock(block('10.244.3.0/24', 'joining'));
    await nextTick();
    expect(t.routed()).toEqual({ joining: ['10.244.3.0/24'] });
    // A lasting false claim is reported once the grace period is over.
    t.watch.upsert(node('liar', { cidr: '10.244.3.0/24', peerId: IDS[1]! }));
    expect(t.reported).toEqual([]);
    await new Promise((r) => setTimeout(r, 120));
    expect(t.reported).toEqual([['liar', ['10.244.3.0/24']]]);
  });

  it('follows IPAMBlocks as they come and go', async () => {
    const t = cluster([]);
    t.watch.upsert(node('late', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    expect(t.routed()).toEqual({ late: [] });
    const before = t.changes();
    // The block arrives (the watch saw the Node first): verified again, routed, routes re-reconciled.
    t.authority.setBlock(block('10.244.3.0/24', 'late'));
    await nextTick();
    expect(t.routed()).toEqual({ late: ['10.244.3.0/24'] });
    expect(t.watch.refusedCidrs().size).toBe(0);
    expect(t.changes()).toBe(before + 1);
    // A block whose name does not encode its CIDR is not evidence of anything.
    t.authority.setBlock({ metadata: { name: 'v4-10-244-3-0-24' }, spec: { cidr: '10.244.4.0/24', node: 'late' } });
    await nextTick();
    expect(t.routed()).toEqual({ late: [] });
    expect(t.authority.badBlocks.get('v4-10-244-3-0-24')).toMatch(/name does not encode/);
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
