// Node and IPAMBlock objects as the API server returns them, for the tests of the Node
// watch and of the peers' route verification (test/unit/agent).
import { EventEmitter } from 'node:events';
import type { V1Node } from '@kubernetes/client-node';
import { routeForwarder } from '../../agent/forwarder-routes.ts';
import type { NodeApi } from '../../agent/kube.ts';
import { NodeWatch } from '../../agent/node-watch.ts';
import { PeerRouteVerifier } from '../../agent/peer-routes.ts';
import { PodCidrAuthority } from '../../agent/pod-cidr-authority.ts';
import { silentLogger } from '../../common/log.ts';
import { blockObjectName } from '../../ipam/node-blocks.ts';
import { PeerDirectory } from '../../overlay/directory.ts';

export const PEER_ID = '12D3KooWGLmu861KbXD6HjhGKVBSFtR7saza4j8J25nP2RPWHwnp';
/** Distinct valid peer IDs (a directory refuses two Nodes with one ID). */
export const IDS = [
  '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK',
  '12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq',
  '12D3KooWSvKm7CjcLgiPcpr2xjZQ3tMF25U3GHoW6vWkN8w9nqNb',
  '12D3KooWQZnbsbQj4tcvZzBW3gpZ5kZq8cKvdAzKhJv1KZFCzMXM',
  '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN',
];

/** A Node carrying edgemesh annotations. */
export function node(
  name: string,
  opts: { cidr?: string; site?: string; ips?: string[]; peerId?: string } = {},
): V1Node {
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
export function block(cidr: string, owner: string) {
  return {
    apiVersion: 'edgemesh.io/v1alpha1',
    kind: 'IPAMBlock',
    metadata: { name: blockObjectName(cidr) },
    spec: { cidr, node: owner, family: cidr.includes(':') ? 6 : 4 },
  };
}

/** The cluster's view: 10.244.0.0/16, with the given blocks. */
export function authorityWith(blocks: Array<[string, string]>): PodCidrAuthority {
  const authority = new PodCidrAuthority(['10.244.0.0/16']);
  for (const [cidr, owner] of blocks) authority.setBlock(block(cidr, owner));
  return authority;
}

/** An informer double: the watch subscribes to it; the test emits the API server's events. */
export function fakeInformer(initial: V1Node[]) {
  const events = new EventEmitter();
  return Object.assign(events, {
    start: async () => {
      for (const n of initial) events.emit('add', n);
    },
    stop: async () => undefined,
    list: () => initial,
  });
}

export const nextTick = () => new Promise((r) => setImmediate(r));

/**
 * The agent's peer parts wired as agent/agent.ts wires them: the Node watch on `informer`
 * feeding the peer table, the route verifier deciding each peer's routes, the binding that
 * programs `forwarder` from the table.
 */
export function peerStack(opts: {
  informer: EventEmitter & { start(): Promise<void>; stop(): Promise<void>; list(): V1Node[] };
  authority: PodCidrAuthority;
  forwarder: Parameters<typeof routeForwarder>[1];
  localCidrs?: string[];
  directory?: PeerDirectory;
}) {
  const directory = opts.directory ?? new PeerDirectory();
  const binding = routeForwarder(directory, opts.forwarder, silentLogger());
  const verifier = new PeerRouteVerifier({
    directory,
    authority: opts.authority,
    localCidrs: opts.localCidrs ?? [],
    logger: silentLogger(),
  });
  const watch = new NodeWatch({
    api: { nodeInformer: () => opts.informer } as unknown as NodeApi,
    selfName: 'me',
    directory,
    authority: opts.authority,
    logger: silentLogger(),
  });
  return { directory, binding, verifier, watch };
}
