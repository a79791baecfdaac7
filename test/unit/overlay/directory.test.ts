import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { beforeAll, describe, expect, it } from 'vitest';
import { Annotations, Labels } from '../../../overlay/annotations.ts';
import {
  type NodeLike,
  PeerDirectory,
  type PeerInfo,
  parsePeerInfo,
  peerAnnotations,
} from '../../../overlay/directory.ts';

let ids: string[] = [];
beforeAll(async () => {
  ids = await Promise.all([1, 2, 3].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()));
});

function node(
  name: string,
  peerId: string,
  over: Record<string, string> = {},
  labels: Record<string, string> = {},
): NodeLike {
  return {
    name,
    labels,
    annotations: {
      ...peerAnnotations({
        peerId,
        multiaddrs: ['/ip4/10.1.0.2/tcp/4001', '/ip4/203.0.113.7/tcp/4001'],
        podCidrs: ['10.244.1.0/24', 'fd00:244:1::/64'],
        site: 'site-a',
        nodeIp: '10.1.0.2',
        punchPort: 4002,
      }),
      ...over,
    },
  };
}

describe('parsePeerInfo', () => {
  it.each([
    ['10.1/16', /invalid CIDR/],
    ['0xa.0.0.0/8', /invalid CIDR/],
    ['167772161/8', /invalid CIDR/],
    ['10.244.1.7/24', /not canonical \(10\.244\.1\.0\/24\)/],
    ['fd00:244:1::1/64', /not canonical/],
    ['10.244.1.0/24, garbage', /invalid CIDR/],
  ])('refuses the pod CIDR annotation %s (forms ipaddr.js alone would accept)', (cidrs, why) => {
    const r = parsePeerInfo(node('n1', ids[0]!, { [Annotations.podCidrs]: cidrs }));
    expect(r.ok).toBe(false);
    expect((r as { reason: string }).reason).toMatch(why);
  });

  it.each(['127.0.0.1', '::1', 'fe80::1', '169.254.0.9', '0.0.0.0', '224.0.0.1', '10.1', 'fd00::1%eth0'])(
    'refuses the node IP %s (never a host-gw next hop)',
    (nodeIp) => {
      const r = parsePeerInfo(node('n1', ids[0]!, { [Annotations.nodeIp]: nodeIp }));
      expect(r.ok).toBe(false);
      expect((r as { reason: string }).reason).toMatch(/node-ip/);
    },
  );

  it('parses a complete node and classifies TEST-NET as public, RFC 1918 as not', () => {
    const r = parsePeerInfo(node('n1', ids[0]!));
    expect(r.ok).toBe(true);
    const peer = (r as { peer: PeerInfo }).peer;
    expect(peer).toMatchObject({
      node: 'n1',
      peerId: ids[0],
      site: 'site-a',
      nodeIp: '10.1.0.2',
      punchPort: 4002,
      relay: false,
    });
    expect(peer.podCidrs).toEqual(['10.244.1.0/24', 'fd00:244:1::/64']);
    expect(peer.publicAddrs.map(String)).toEqual(['/ip4/203.0.113.7/tcp/4001']);
  });

  it.each([
    ['no peer id', { [Annotations.peerId]: '' }, /peer-id/],
    ['bad peer id', { [Annotations.peerId]: 'not-a-peer' }, /not a libp2p peer ID/],
    ['multiaddrs not JSON', { [Annotations.multiaddrs]: '[oops' }, /not JSON/],
    ['multiaddrs not strings', { [Annotations.multiaddrs]: '[1,2]' }, /array of strings/],
    ['invalid multiaddr', { [Annotations.multiaddrs]: '["/ip4/999.1.1.1/tcp/1"]' }, /invalid multiaddr/],
    ['bad CIDR', { [Annotations.podCidrs]: '10.244.1.0/33' }, /invalid CIDR/],
    ['no site', { [Annotations.site]: '' }, /no site/],
    ['bad node ip', { [Annotations.nodeIp]: 'ten' }, /not an IP/],
    ['bad punch port', { [Annotations.punchPort]: '70000' }, /not a TCP port/],
  ])('ignores a node with %s, with a reason', (_what, over, reason) => {
    const r = parsePeerInfo(node('bad', ids[0]!, over));
    expect(r.ok).toBe(false);
    expect((r as { reason: string }).reason).toMatch(reason);
    expect((r as { reason: string }).reason).toContain('node bad');
  });

  it('takes the site from the label when the annotation is absent', () => {
    const n = node('n1', ids[0]!, {}, { [Labels.site]: 'from-label' });
    delete n.annotations![Annotations.site];
    expect(parsePeerInfo(n)).toMatchObject({ ok: true, peer: { site: 'from-label' } });
  });

  it('refuses a relay label on a node without a public address', () => {
    const n = node(
      'r',
      ids[0]!,
      { [Annotations.multiaddrs]: '["/ip4/10.0.0.1/tcp/4001"]' },
      { [Labels.relay]: 'true' },
    );
    expect(parsePeerInfo(n)).toMatchObject({ ok: false });
  });
});

describe('PeerDirectory', () => {
  it('emits added, updated (only on a real change) and removed', () => {
    const dir = new PeerDirectory();
    const events: string[] = [];
    dir.on('peer:added', (p) => events.push(`added ${p.node}`));
    dir.on('peer:updated', (p, prev) => events.push(`updated ${p.node} ${prev.site}->${p.site}`));
    dir.on('peer:removed', (p) => events.push(`removed ${p.node}`));
    expect(dir.upsertFromNode(node('n1', ids[0]!))).toMatchObject({ ok: true, change: 'added' });
    expect(dir.upsertFromNode(node('n1', ids[0]!))).toMatchObject({ ok: true, change: 'unchanged' });
    expect(dir.upsertFromNode(node('n1', ids[0]!, { [Annotations.site]: 'site-b' }))).toMatchObject({
      change: 'updated',
    });
    expect(dir.get('n1')?.site).toBe('site-b');
    expect(dir.byPeerId(ids[0]!)?.node).toBe('n1');
    expect(dir.remove('n1')).toBe(true);
    expect(dir.remove('n1')).toBe(false);
    expect(dir.byPeerId(ids[0]!)).toBeUndefined();
    expect(events).toEqual(['added n1', 'updated n1 site-a->site-b', 'removed n1']);
  });

  it("keeps each trusted peer's routes: peer:routes on a change only, gone with the peer", () => {
    const dir = new PeerDirectory();
    const events: string[] = [];
    dir.on('peer:routes', (n, routes, previous) => events.push(`${n} ${previous.join(',')} -> ${routes.join(',')}`));
    dir.on('peer:removed', (p) => events.push(`removed ${p.node}`));
    // Not a peer (yet): nothing is kept, nothing emitted.
    expect(dir.setRoutes('n1', ['10.244.1.0/24'], [])).toBe(false);
    expect(dir.routesOf('n1')).toEqual([]);
    dir.upsertFromNode(node('n1', ids[0]!));
    expect(dir.routesOf('n1')).toEqual([]);
    const refused = [{ cidr: 'fd00:244:1::/64', reason: 'outside the cluster CIDRs' }];
    expect(dir.setRoutes('n1', ['10.244.1.0/24'], refused)).toBe(true);
    expect(dir.routesOf('n1')).toEqual(['10.244.1.0/24']);
    expect(dir.refusedOf('n1')).toEqual(refused);
    expect(dir.refusals()).toEqual(new Map([['n1', refused]]));
    // The same routes again: no event. Other refusals alone: recorded, no event.
    expect(dir.setRoutes('n1', ['10.244.1.0/24'], refused)).toBe(false);
    expect(dir.setRoutes('n1', ['10.244.1.0/24'], [])).toBe(false);
    expect(dir.refusals().size).toBe(0);
    // What the getters return is a copy: the table changes only through setRoutes.
    dir.routesOf('n1').push('10.0.0.0/8');
    expect(dir.routesOf('n1')).toEqual(['10.244.1.0/24']);
    // An update of the Node keeps its routes (the verifier decides them again).
    dir.upsertFromNode(node('n1', ids[0]!, { [Annotations.site]: 'site-b' }));
    expect(dir.routesOf('n1')).toEqual(['10.244.1.0/24']);
    expect(dir.setRoutes('n1', [], refused)).toBe(true);
    expect(dir.setRoutes('n1', ['10.244.1.0/24'], [])).toBe(true);
    dir.remove('n1');
    expect(dir.routesOf('n1')).toEqual([]);
    expect(dir.refusedOf('n1')).toEqual([]);
    expect(events).toEqual(['n1  -> 10.244.1.0/24', 'n1 10.244.1.0/24 -> ', 'n1  -> 10.244.1.0/24', 'removed n1']);
  });

  it('drops the routes of a peer that stops being trusted, and starts it from none when trusted again', () => {
    const dir = new PeerDirectory();
    dir.upsertFromNode(node('n1', ids[0]!));
    dir.setRoutes('n1', ['10.244.1.0/24'], [{ cidr: 'fd00:244:1::/64', reason: 'x' }]);
    // Another Node publishes the same peer ID: neither is trusted, n1's routes go.
    dir.upsertFromNode(node('n2', ids[0]!));
    expect(dir.get('n1')).toBeUndefined();
    expect(dir.routesOf('n1')).toEqual([]);
    expect(dir.refusals().size).toBe(0);
    expect(dir.setRoutes('n1', ['10.244.1.0/24'], [])).toBe(false);
    dir.remove('n2');
    expect(dir.get('n1')).toBeDefined();
    expect(dir.routesOf('n1')).toEqual([]);
  });

  it('re-indexes by peer ID when a node gets a new key', () => {
    const dir = new PeerDirectory();
    dir.upsertFromNode(node('n1', ids[0]!));
    dir.upsertFromNode(node('n1', ids[1]!));
    expect(dir.has(ids[0]!)).toBe(false);
    expect(dir.byPeerId(ids[1]!)?.node).toBe('n1');
    expect(dir.list()).toHaveLength(1);
  });

  it('drops the entry of a node whose annotations became invalid, and records why', () => {
    const dir = new PeerDirectory();
    const removed: string[] = [];
    dir.on('peer:removed', (p) => removed.push(p.node));
    dir.upsertFromNode(node('n1', ids[0]!));
    const r = dir.upsertFromNode(node('n1', ids[0]!, { [Annotations.podCidrs]: 'garbage' }));
    expect(r.ok).toBe(false);
    expect(removed).toEqual(['n1']);
    expect(dir.ignored.get('n1')).toMatch(/invalid CIDR/);
    expect(dir.has(ids[0]!)).toBe(false);
  });

  it('trusts neither of two nodes publishing one peer ID, reports the conflict, and recovers when one stops', () => {
    const dir = new PeerDirectory();
    const events: string[] = [];
    dir.on('peer:added', (p) => events.push(`added ${p.node}`));
    dir.on('peer:removed', (p) => events.push(`removed ${p.node}`));
    dir.upsertFromNode(node('n1', ids[0]!));
    // A second node copies n1's peer ID: first-come used to win, so after a restart list
    // order decided who got n1's traffic. Now neither is trusted.
    const r = dir.upsertFromNode(node('n2', ids[0]!, { [Annotations.podCidrs]: '10.244.2.0/24' }));
    expect(r).toMatchObject({ ok: false, reason: expect.stringMatching(/published by nodes n1, n2/) });
    expect(dir.byPeerId(ids[0]!)).toBeUndefined();
    expect(dir.list()).toEqual([]);
    expect(dir.ignored.get('n1')).toMatch(/trusting none/);
    expect(dir.ignored.get('n2')).toMatch(/trusting none/);
    expect(dir.conflicts()).toEqual(new Map([[ids[0]!, ['n1', 'n2']]]));
    // Updates of either side while in conflict change nothing.
    expect(dir.upsertFromNode(node('n1', ids[0]!, { [Annotations.site]: 'x' })).ok).toBe(false);
    expect(dir.list()).toEqual([]);
    // The impostor takes a key of its own: both are trusted again, each under its own ID.
    expect(dir.upsertFromNode(node('n2', ids[1]!, { [Annotations.podCidrs]: '10.244.2.0/24' })).ok).toBe(true);
    expect(dir.byPeerId(ids[0]!)?.node).toBe('n1');
    expect(dir.byPeerId(ids[1]!)?.node).toBe('n2');
    expect(dir.conflicts().size).toBe(0);
    expect(dir.ignored.size).toBe(0);
    // A conflict that ends with a Node's deletion frees the other one too.
    dir.upsertFromNode(node('n3', ids[1]!));
    expect(dir.get('n2')).toBeUndefined();
    dir.remove('n3');
    expect(dir.get('n2')?.peerId).toBe(ids[1]);
    expect(events).toEqual(['added n1', 'removed n1', 'added n1', 'added n2', 'removed n2', 'added n2']);
  });

  it('decides a conflict the same way whatever order the Nodes are listed in', () => {
    for (const order of [
      ['a', 'b'],
      ['b', 'a'],
    ]) {
      const dir = new PeerDirectory();
      for (const name of order) dir.upsertFromNode(node(name, ids[2]!));
      expect(dir.list()).toEqual([]);
    }
  });

  it('lists relays: labelled nodes with a public address', () => {
    const dir = new PeerDirectory();
    dir.upsertFromNode(node('edge', ids[0]!));
    dir.upsertFromNode(node('relay', ids[1]!, {}, { [Labels.relay]: 'true' }));
    expect(dir.relays().map((p) => p.node)).toEqual(['relay']);
  });

  it('keeps its relay list current as Nodes come, change and go, whatever callers do to a copy', () => {
    const dir = new PeerDirectory();
    dir.upsertFromNode(node('edge', ids[0]!));
    expect(dir.relays()).toEqual([]);
    dir.upsertFromNode(node('relay', ids[1]!, {}, { [Labels.relay]: 'true' }));
    const relays = dir.relays();
    expect(relays.map((p) => p.node)).toEqual(['relay']);
    relays.pop();
    expect(dir.relays().map((p) => p.node)).toEqual(['relay']);
    dir.upsertFromNode(node('edge', ids[0]!, {}, { [Labels.relay]: 'true' }));
    expect(
      dir
        .relays()
        .map((p) => p.node)
        .sort(),
    ).toEqual(['edge', 'relay']);
    dir.remove('relay');
    expect(dir.relays().map((p) => p.node)).toEqual(['edge']);
  });
});
