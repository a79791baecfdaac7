import { EventEmitter } from 'node:events';
import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../../../agent/config.ts';
import type { NodeApi } from '../../../agent/kube.ts';
import { NodeWatch } from '../../../agent/node-watch.ts';
import { resolveIdentity } from '../../../agent/self-node.ts';
import { silentLogger } from '../../../common/log.ts';
import { Forwarder } from '../../../dataplane/forwarder.ts';
import type { PacketIO } from '../../../dataplane/types.ts';
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
      setPeer: (n, cidrs) => calls.push(`set ${n} ${cidrs.join(',')}`),
      removePeer: (n) => calls.push(`remove ${n}`),
    },
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
    // A new InternalIP (dual-stack next hop) is a routing change although the directory is unchanged.
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24', ips: ['192.168.1.2', 'fd00::2'] }));
    expect(t.changes()).toBe(3);
    expect(t.watch.internalIps('peer')).toEqual(['192.168.1.2', 'fd00::2']);
    t.watch.remove(node('peer'));
    expect(t.calls.at(-1)).toBe('remove peer');
    expect(t.directory.list()).toEqual([]);
    expect(t.watch.internalIps('peer')).toEqual([]);
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
        removePeer: (n) => removed.push(n),
      },
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
