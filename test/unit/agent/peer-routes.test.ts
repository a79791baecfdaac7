import type { V1Node } from '@kubernetes/client-node';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ForwarderPeers, routeForwarder } from '../../../agent/forwarder-routes.ts';
import type { NodeApi } from '../../../agent/kube.ts';
import { NodeWatch } from '../../../agent/node-watch.ts';
import { PeerRouteVerifier } from '../../../agent/peer-routes.ts';
import type { PodCidrAuthority } from '../../../agent/pod-cidr-authority.ts';
import { silentLogger } from '../../../common/log.ts';
import { Forwarder } from '../../../dataplane/forwarder.ts';
import type { PacketIO } from '../../../dataplane/types.ts';
import { PeerDirectory } from '../../../overlay/directory.ts';
import { authorityWith, block, fakeInformer, IDS, nextTick, node, peerStack } from '../../support/peer-nodes.ts';

const tun: PacketIO = { offload: false, onBatch: () => undefined, write: (b) => b.length };

/** A forwarder double that records what it is told. */
function recordingForwarder(calls: string[]): ForwarderPeers {
  return {
    setPeer: (n, cidrs) => {
      calls.push(`set ${n} ${cidrs.join(',')}`);
      return [];
    },
    removePeer: (n) => {
      calls.push(`remove ${n}`);
    },
  };
}

/** Node watch → peer table → verifier → forwarder binding, as the agent wires them. */
function chain(
  authority: PodCidrAuthority,
  opts: { forwarder?: ForwarderPeers; reportAfterMs?: number; localCidrs?: string[] } = {},
) {
  const directory = new PeerDirectory();
  const localCidrs = opts.localCidrs ?? ['10.244.0.0/24'];
  const forwarder = opts.forwarder ?? new Forwarder({ tun, localCidrs, logger: silentLogger() });
  const binding = routeForwarder(directory, forwarder, silentLogger());
  const reported: Array<[string, string[]]> = [];
  const verifier = new PeerRouteVerifier({
    directory,
    authority,
    localCidrs,
    onRefused: (n, refused) => reported.push([n, refused.map((r) => r.cidr)]),
    reportRefusalsAfterMs: opts.reportAfterMs ?? 0,
    logger: silentLogger(),
  });
  const routeEvents: string[] = [];
  directory.on('peer:routes', (n, routes) => routeEvents.push(`${n} ${routes.join(',')}`));
  const watch = new NodeWatch({ api: {} as NodeApi, selfName: 'me', directory, authority, logger: silentLogger() });
  const routed = () =>
    Object.fromEntries(directory.list().map((p) => [p.node, directory.routesOf(p.node)] as [string, string[]]));
  return { directory, forwarder, binding, verifier, watch, reported, routed, routeEvents };
}

describe('PeerRouteVerifier + routeForwarder', () => {
  it('writes the routes into the peer table, and the forwarder follows them', () => {
    const calls: string[] = [];
    const t = chain(
      authorityWith([
        ['10.244.2.0/24', 'peer'],
        ['10.244.9.0/24', 'peer'],
      ]),
      { forwarder: recordingForwarder(calls) },
    );
    t.watch.upsert(node('peer'));
    expect(t.directory.routesOf('peer')).toEqual(['10.244.2.0/24']);
    expect(t.routeEvents).toEqual(['peer 10.244.2.0/24']);
    // The forwarder knows every trusted peer (the overlay attaches its link), then its routes.
    expect(calls.at(-1)).toBe('set peer 10.244.2.0/24');
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24' }));
    expect(calls.at(-1)).toBe('set peer 10.244.9.0/24');
    expect(t.routeEvents).toEqual(['peer 10.244.2.0/24', 'peer 10.244.9.0/24']);
    // A change that leaves the routes as they are (a new InternalIP) is no peer:routes.
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24', ips: ['192.168.1.2', 'fd00::2'] }));
    expect(t.routeEvents).toHaveLength(2);
    t.watch.remove(node('peer'));
    expect(calls.at(-1)).toBe('remove peer');
    expect(t.directory.routesOf('peer')).toEqual([]);
  });

  it('takes the routes of a peer whose verification failed, but keeps the peer (and the link the overlay gave it)', () => {
    const calls: string[] = [];
    const authority = authorityWith([['10.244.2.0/24', 'peer']]);
    let fail = false;
    const verify = authority.verify.bind(authority);
    authority.verify = (n, cidrs) => {
      if (fail) throw new Error('a bug nobody foresaw');
      return verify(n, cidrs);
    };
    const t = chain(authority, { forwarder: recordingForwarder(calls) });
    t.watch.upsert(node('peer'));
    fail = true;
    t.watch.upsert(node('peer', { cidr: '10.244.9.0/24' }));
    expect(t.verifier.handlerErrors).toBe(1);
    expect(t.directory.get('peer')).toBeDefined();
    expect(t.directory.routesOf('peer')).toEqual([]);
    expect(t.directory.refusedOf('peer')).toEqual([{ cidr: '10.244.9.0/24', reason: expect.stringMatching(/failed/) }]);
    expect(calls.filter((c) => c.startsWith('set peer 10'))).toEqual(['set peer 10.244.2.0/24']);
    expect(calls.at(-1)).toBe('set peer ');
  });

  it('survives a forwarder that throws: counted, the peer left without routes, the table intact', async () => {
    const removed: string[] = [];
    const informer = fakeInformer([]);
    const directory = new PeerDirectory();
    const authority = authorityWith([['10.244.2.0/24', 'peer']]);
    const { binding, verifier, watch } = peerStack({
      informer,
      authority,
      directory,
      forwarder: {
        setPeer: () => {
          throw new Error('kernel said no');
        },
        removePeer: (n) => {
          removed.push(n);
        },
      },
    });
    await watch.start();
    expect(() => informer.emit('add', node('peer'))).not.toThrow();
    expect(binding.errors).toBeGreaterThanOrEqual(1);
    expect(removed).toContain('peer');
    // The verifier heard its own peer:routes although the forwarder's handler failed.
    expect(directory.routesOf('peer')).toEqual(['10.244.2.0/24']);
    expect(watch.handlerErrors + verifier.handlerErrors).toBe(0);
    const errors = binding.errors;
    informer.emit('delete', node('peer'));
    expect(binding.errors).toBe(errors);
    await watch.stop();
    verifier.stop();
  });

  it('counts (and logs) a CIDR the forwarder still refuses: its guard stays', () => {
    const directory = new PeerDirectory();
    const forwarder = new Forwarder({ tun, localCidrs: ['10.244.0.0/24'], logger: silentLogger() });
    const binding = routeForwarder(directory, forwarder, silentLogger());
    // No verifier here: whoever writes the table wrong, the forwarder does not route it.
    directory.upsertFromNode({ name: 'evil', annotations: node('evil').metadata!.annotations! });
    directory.setRoutes('evil', ['10.244.0.0/25'], []);
    expect(binding.refusedByForwarder).toBe(1);
    expect(forwarder.stats().refusedCidrs).toEqual({ evil: ['10.244.0.0/25'] });
    binding.stop();
  });
});

describe('PeerRouteVerifier: a node speaks only for itself', () => {
  function cluster(blocks: Array<[string, string]>, opts: { reportAfterMs?: number } = {}) {
    const authority = authorityWith([['10.244.0.0/24', 'me'], ...blocks]);
    return { authority, ...chain(authority, opts) };
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
    const reasons = Object.fromEntries(t.directory.refusedOf('evil').map((r) => [r.cidr, r.reason]));
    expect(reasons).toEqual({
      '10.244.2.0/24': expect.stringMatching(/no IPAMBlock or spec.podCIDRs assigns it to node evil/),
      '10.244.2.7/32': expect.stringMatching(/assigns it/),
      '0.0.0.0/0': 'outside the cluster CIDRs',
      '192.168.0.0/16': 'outside the cluster CIDRs',
      '10.244.0.0/24': expect.stringMatching(/assigns it/),
      '10.244.77.0/24': expect.stringMatching(/assigns it/),
    });
    expect([...t.directory.refusals().keys()]).toEqual(['evil']);
    expect(t.reported).toEqual([['evil', claims]]);
    // The real forwarder routes nothing to it, and never had to refuse anything itself.
    const forwarder = t.forwarder as Forwarder;
    expect(forwarder.stats().refusedCidrs).toEqual({});
    expect(Object.keys(forwarder.stats().peers).sort()).toEqual(['evil', 'good']);
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
    expect(t.directory.refusedOf('b')[0]!.reason).toMatch(/overlaps pod CIDRs assigned to a/);
  });

  it('refuses what another peer already routes, first come first routed, and hands it over when that peer goes', async () => {
    const authority = authorityWith([['10.244.3.0/24', 'old']]);
    const t = chain(authority);
    t.watch.upsert(node('old', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    // The block moves to a new owner (a node re-registered under another name) while the
    // old one still routes it: the old one keeps it until it is verified again.
    authority.removeBlock(block('10.244.3.0/24', 'old').metadata.name);
    authority.setBlock(block('10.244.3.0/24', 'new'));
    t.watch.upsert(node('new', { cidr: '10.244.3.0/24', peerId: IDS[1]! }));
    expect(t.routed()).toEqual({ old: ['10.244.3.0/24'], new: [] });
    expect(t.directory.refusedOf('new')).toEqual([
      { cidr: '10.244.3.0/24', reason: 'overlaps a pod CIDR routed to old' },
    ]);
    // The scheduled pass takes it from the old one, and the one after gives it to the new one.
    await nextTick();
    await nextTick();
    expect(t.routed()).toEqual({ old: [], new: ['10.244.3.0/24'] });
    expect(t.directory.refusals().has('new')).toBe(false);
    expect((t.forwarder as Forwarder).stats().refusedCidrs).toEqual({});
  });

  it('never routes anything overlapping this node’s own blocks, whatever the authority says', () => {
    // A cluster view that (wrongly) gives a peer this node's own range.
    const t = chain(authorityWith([['10.244.0.0/24', 'peer']]));
    t.watch.upsert(node('peer', { cidr: '10.244.0.0/24' }));
    expect(t.routed()).toEqual({ peer: [] });
    expect(t.directory.refusedOf('peer')[0]!.reason).toBe('overlaps a pod CIDR routed to this node');
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
    const before = t.routeEvents.length;
    // The block arrives (the watch saw the Node first): verified again, routed, peer:routes.
    t.authority.setBlock(block('10.244.3.0/24', 'late'));
    await nextTick();
    expect(t.routed()).toEqual({ late: ['10.244.3.0/24'] });
    expect(t.directory.refusals().size).toBe(0);
    expect(t.routeEvents.length).toBe(before + 1);
    // A block whose name does not encode its CIDR is not evidence of anything.
    t.authority.setBlock({ metadata: { name: 'v4-10-244-3-0-24' }, spec: { cidr: '10.244.4.0/24', node: 'late' } });
    await nextTick();
    expect(t.routed()).toEqual({ late: [] });
    expect(t.authority.badBlocks.get('v4-10-244-3-0-24')).toMatch(/name does not encode/);
  });

  it('stops: no more verification, no report after stop()', async () => {
    const t = cluster([], { reportAfterMs: 20 });
    t.watch.upsert(node('liar', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    t.verifier.stop();
    t.authority.setBlock(block('10.244.3.0/24', 'liar'));
    await new Promise((r) => setTimeout(r, 60));
    expect(t.reported).toEqual([]);
    expect(t.routed()).toEqual({ liar: [] });
  });
});

describe('PeerRouteVerifier: verifies again only the peers a change concerns', () => {
  /** Settles every scheduled pass (a pass may schedule one more). */
  const settle = async () => {
    for (let i = 0; i < 5; i++) await nextTick();
  };
  const withSpec = (n: V1Node, podCIDRs: string[]): V1Node => ({ ...n, spec: { podCIDRs } });

  it('a change to one CIDR verifies its claimants (a liar too), not the bystanders', async () => {
    const authority = authorityWith([
      ['10.244.3.0/24', 'a'],
      ['10.244.4.0/24', 'b'],
      ['10.244.5.0/24', 'c'],
    ]);
    const t = chain(authority);
    t.watch.upsert(node('a', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    t.watch.upsert(node('b', { cidr: '10.244.4.0/24', peerId: IDS[1]! }));
    t.watch.upsert(node('c', { cidr: '10.244.5.0/24', peerId: IDS[2]! }));
    t.watch.upsert(node('liar', { cidr: '10.244.3.128/25', peerId: IDS[3]! }));
    await settle();
    const before = { ...t.verifier.passes };
    // b's Node gets spec.podCIDRs (equal to its block): only b claims anything overlapping.
    t.watch.upsert(withSpec(node('b', { cidr: '10.244.4.0/24', peerId: IDS[1]! }), ['10.244.4.0/24']));
    await settle();
    // The table sees no change in b (its annotations are the same): the pass verifies b alone.
    expect(t.verifier.passes.peersVerified - before.peersVerified).toBe(1);
    // The block of a goes: a and the liar claiming inside it are verified, b and c are not.
    authority.removeBlock(block('10.244.3.0/24', 'a').metadata.name);
    authority.setNodePodCidrs('c', []); // c never had spec.podCIDRs: no change, no pass
    await settle();
    expect(t.verifier.passes.peersVerified - before.peersVerified).toBe(3);
    expect(t.verifier.passes.runs - before.runs).toBe(2);
    expect(t.routed()).toEqual({ a: [], b: ['10.244.4.0/24'], c: ['10.244.5.0/24'], liar: [] });
    expect(t.directory.refusedOf('a')[0]!.reason).toMatch(/no IPAMBlock or spec.podCIDRs assigns it/);
  });

  it('a burst of changes is one pass over the peers they concern', async () => {
    const authority = authorityWith([]);
    const t = chain(authority);
    const names = ['a', 'b', 'c', 'd'];
    for (const [i, n] of names.entries()) t.watch.upsert(node(n, { cidr: `10.244.${i + 3}.0/24`, peerId: IDS[i]! }));
    expect(t.verifier.passes.runs).toBe(0);
    for (const [i, n] of names.entries()) authority.setBlock(block(`10.244.${i + 3}.0/24`, n));
    authority.setBlock(block('10.244.3.0/24', 'a')); // unchanged: nothing
    await settle();
    expect(t.verifier.passes).toEqual({ runs: 1, peersVerified: 4 });
    expect(t.routed()).toEqual({
      a: ['10.244.3.0/24'],
      b: ['10.244.4.0/24'],
      c: ['10.244.5.0/24'],
      d: ['10.244.6.0/24'],
    });
  });

  it('a CIDR freed by a peer that goes reaches the peer refused it, and only that one is verified', async () => {
    const authority = authorityWith([
      ['10.244.3.0/24', 'old'],
      ['10.244.4.0/24', 'bystander'],
    ]);
    const t = chain(authority);
    t.watch.upsert(node('old', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    t.watch.upsert(node('bystander', { cidr: '10.244.4.0/24', peerId: IDS[1]! }));
    authority.removeBlock(block('10.244.3.0/24', 'old').metadata.name);
    authority.setBlock(block('10.244.3.0/24', 'new'));
    t.watch.upsert(node('new', { cidr: '10.244.3.0/24', peerId: IDS[2]! }));
    expect(t.directory.refusedOf('new')).toEqual([
      { cidr: '10.244.3.0/24', reason: 'overlaps a pod CIDR routed to old' },
    ]);
    // The old Node goes before the pass the block move scheduled.
    t.watch.remove(node('old'));
    await settle();
    expect(t.verifier.passes).toEqual({ runs: 1, peersVerified: 1 });
    expect(t.routed()).toEqual({ bystander: ['10.244.4.0/24'], new: ['10.244.3.0/24'] });
    expect(t.directory.refusals().size).toBe(0);
  });

  it('an IPAMBlock that moves verifies its old and its new holder, the old one giving it up to the new one', async () => {
    const authority = authorityWith([
      ['10.244.3.0/24', 'old'],
      ['10.244.4.0/24', 'bystander'],
    ]);
    const t = chain(authority);
    t.watch.upsert(node('old', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    t.watch.upsert(node('new', { cidr: '10.244.3.0/24', peerId: IDS[1]! }));
    t.watch.upsert(node('bystander', { cidr: '10.244.4.0/24', peerId: IDS[2]! }));
    expect(t.routed()).toEqual({ old: ['10.244.3.0/24'], new: [], bystander: ['10.244.4.0/24'] });
    // The same block object now names another node (an update, not a re-creation).
    authority.setBlock(block('10.244.3.0/24', 'new'));
    await settle();
    expect(t.routed()).toEqual({ old: [], new: ['10.244.3.0/24'], bystander: ['10.244.4.0/24'] });
    expect(t.directory.refusedOf('old')[0]!.reason).toMatch(/assigns it to node old/);
    expect(t.directory.refusals().has('new')).toBe(false);
    expect(t.verifier.passes).toEqual({ runs: 1, peersVerified: 2 });
  });

  it('a peer verified before the one giving up its route in the same pass gets it in the next', async () => {
    const authority = authorityWith([['10.244.3.0/24', 'old']]);
    const t = chain(authority);
    // new claims first (so a pass reaches it first), unbacked; old is routed the block.
    t.watch.upsert(node('new', { cidr: '10.244.3.0/24', peerId: IDS[0]! }));
    t.watch.upsert(node('old', { cidr: '10.244.3.0/24', peerId: IDS[1]! }));
    expect(t.routed()).toEqual({ new: [], old: ['10.244.3.0/24'] });
    authority.setBlock(block('10.244.3.0/24', 'new'));
    await nextTick();
    // new was refused for old's route, then old gave it up: new is verified again.
    expect(t.routed()).toEqual({ new: [], old: [] });
    expect(t.directory.refusedOf('new')[0]!.reason).toBe('overlaps a pod CIDR routed to old');
    await nextTick();
    expect(t.routed()).toEqual({ new: ['10.244.3.0/24'], old: [] });
    expect(t.verifier.passes).toEqual({ runs: 2, peersVerified: 3 });
  });

  it('spec.podCIDRs taken away free the block inside them for its node', async () => {
    const authority = authorityWith([['10.244.3.0/24', 'a']]);
    const t = chain(authority);
    // big's spec.podCIDRs cover a's block: the spec wins, big is backed, a's block is refused.
    t.watch.upsert(withSpec(node('big', { cidr: '10.244.2.0/23', peerId: IDS[0]! }), ['10.244.2.0/23']));
    t.watch.upsert(node('a', { cidr: '10.244.3.0/24', peerId: IDS[1]! }));
    expect(t.routed()).toEqual({ big: ['10.244.2.0/23'], a: [] });
    // The spec moves away; big keeps its route until verified, a is verified in the same pass.
    t.watch.upsert(withSpec(node('big', { cidr: '10.244.2.0/23', peerId: IDS[0]! }), []));
    await settle();
    expect(t.routed()).toEqual({ big: [], a: ['10.244.3.0/24'] });
    expect(t.directory.refusals().has('a')).toBe(false);
  });
});

describe('PeerRouteVerifier: the passes over the peers concerned leave what a full pass would', () => {
  // Few nodes and CIDRs, so that claims collide: blocks move, specs cover blocks, a peer
  // holds a route the authority no longer backs while another is refused for it.
  const NODES = ['n0', 'n1', 'n2'];
  const CIDRS = ['10.244.2.0/24', '10.244.2.0/25'];
  const SPECS = ['10.244.2.0/23', '10.244.2.0/24', '10.244.0.0/24'];
  const opArb = fc.oneof(
    fc.record({
      kind: fc.constant('block' as const),
      cidr: fc.constantFrom(...CIDRS),
      node: fc.constantFrom(...NODES),
    }),
    fc.record({ kind: fc.constant('unblock' as const), cidr: fc.constantFrom(...CIDRS) }),
    fc.record({
      kind: fc.constant('node' as const),
      node: fc.constantFrom(...NODES),
      claims: fc.uniqueArray(fc.constantFrom(...CIDRS), { minLength: 1, maxLength: 2 }),
      spec: fc.oneof(
        { weight: 3, arbitrary: fc.constant<string[]>([]) },
        fc.array(fc.constantFrom(...SPECS), { maxLength: 1 }),
      ),
    }),
    fc.record({ kind: fc.constant('delete' as const), node: fc.constantFrom(...NODES) }),
    fc.record({ kind: fc.constant('settle' as const) }),
  );

  it('after any sequence of events, verifying every peer again changes nothing', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 20 }), async (ops) => {
        const authority = authorityWith([['10.244.0.0/24', 'me']]);
        const t = chain(authority);
        const settle = async () => {
          for (let i = 0; i < 8; i++) await nextTick();
        };
        for (const op of ops) {
          if (op.kind === 'block') authority.setBlock(block(op.cidr, op.node));
          else if (op.kind === 'unblock') authority.removeBlock(block(op.cidr, 'x').metadata.name);
          else if (op.kind === 'node') {
            const n = node(op.node, { cidr: op.claims.join(','), peerId: IDS[NODES.indexOf(op.node)]! });
            t.watch.upsert({ ...n, spec: { podCIDRs: op.spec } });
          } else if (op.kind === 'delete') t.watch.remove(node(op.node));
          else await settle();
        }
        await settle();
        const state = () =>
          JSON.stringify(
            t.directory.list().map((p) => [p.node, t.directory.routesOf(p.node), t.directory.refusedOf(p.node)]),
          );
        const incremental = state();
        t.verifier.reverifyAll();
        expect(state()).toBe(incremental);
        expect(t.verifier.handlerErrors).toBe(0);
        t.verifier.stop();
      }),
      { numRuns: 300 },
    );
  });
});
