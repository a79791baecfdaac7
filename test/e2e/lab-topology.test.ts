// The topology: the built-in default resolves to the documented layout, overrides apply,
// and anything outside TEST-NET / RFC 1918, overlapping or ambiguous is refused with a
// readable error (no privileges needed, but it belongs to the lab's suite).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../common/config.ts';
import { labSites } from '../../lab/network.ts';
import {
  DEFAULT_TOPOLOGY,
  defaultTopology,
  loadTopologyFile,
  minimalTopology,
  parseNatOption,
  parseNetemOption,
  resolveTopology,
} from '../../lab/topology.ts';

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('lab topology', () => {
  it('resolves the default: a public cloud site with one relay, two NAT sites, two pods per node', () => {
    const t = defaultTopology();
    expect(t.nodes.map((n) => n.name)).toEqual(['cloud-1', 'cloud-2', 'edge-a-1', 'edge-a-2', 'edge-b-1', 'edge-b-2']);
    expect(t.nodes.filter((n) => n.relay).map((n) => n.name)).toEqual(['cloud-1']);
    expect(t.nodes.find((n) => n.name === 'cloud-1')).toMatchObject({ ip: '203.0.113.10', publicIp: '203.0.113.10' });
    expect(t.nodes.find((n) => n.name === 'edge-b-2')).toMatchObject({
      ip: '192.168.20.12',
      gateway: '192.168.20.1',
      netnsSuffix: 'n-b2',
    });
    expect(t.nodes.find((n) => n.name === 'edge-a-1')!.publicIp).toBeUndefined();
    expect(t.routers.map((r) => [r.site, r.wanIp, r.lanIp, r.nat])).toEqual([
      ['edge-a', '203.0.113.101', '192.168.10.1', 'masquerade'],
      ['edge-b', '203.0.113.102', '192.168.20.1', 'masquerade'],
    ]);
    expect(t.nodes.flatMap((n) => n.pods)).toHaveLength(12);
    expect(t.clusterCidrs).toEqual(['10.244.0.0/16']);
  });

  it('applies overrides: nodes, pods, dual-stack, symmetric NAT per site, netem', () => {
    const t = defaultTopology({
      nodesPerSite: 3,
      podsPerNode: 1,
      dualStack: true,
      symmetricNat: ['edge-b'],
      netem: { 'edge-a': { delayMs: 0, jitterMs: 0, lossPct: 2 } },
    });
    expect(t.nodes).toHaveLength(9);
    expect(t.nodes.flatMap((n) => n.pods)).toHaveLength(9);
    expect(t.clusterCidrs).toEqual(['10.244.0.0/16', 'fd00:10:244::/56']);
    expect(t.routers.map((r) => r.nat)).toEqual(['masquerade', 'symmetric']);
    expect(t.routers[0]!.netem).toEqual({ delayMs: 0, jitterMs: 0, lossPct: 2 });
    // Dual-stack: an IPv6 /64 per site segment for same-site host-gw.
    expect(t.nodes.find((n) => n.name === 'cloud-2')!.ipv6).toBe('fd00:ed6e:0::b');
    expect(t.nodes.find((n) => n.name === 'edge-b-3')!.ipv6).toBe('fd00:ed6e:3::d');
    expect(t.routers[1]).toMatchObject({ lanIpV6: 'fd00:ed6e:3::1', lanCidrV6: 'fd00:ed6e:3::/64' });
    expect(defaultTopology().nodes.every((n) => n.ipv6 === undefined)).toBe(true);
    expect(minimalTopology({ symmetricNat: true }).routers.every((r) => r.nat === 'symmetric')).toBe(true);
    expect(minimalTopology().nodes).toHaveLength(3);
  });

  it('refuses an internet outside TEST-NET and LANs outside RFC 1918', () => {
    const e = errorOf(() =>
      resolveTopology({
        ...DEFAULT_TOPOLOGY,
        internet: { cidr: '8.8.8.0/24', gateway: '8.8.8.1' },
        sites: [{ name: 'x', tag: 'x', kind: 'nat', lan: '100.64.0.0/24', wanIp: '8.8.8.9' }],
      }),
    );
    expect(e.message).toContain('internet.cidr: 8.8.8.0/24 must lie in a TEST-NET range');
    expect(e.message).toContain('sites[0].lan: 100.64.0.0/24 must be RFC 1918');
  });

  it('refuses overlaps, duplicates and misplaced fields with one line per problem', () => {
    const e = errorOf(() =>
      resolveTopology({
        sites: [
          { name: 'a', tag: 'a', kind: 'nat', lan: '10.244.5.0/24', wanIp: '203.0.113.10' },
          { name: 'a', tag: 'a', kind: 'public', firstPublicIp: '203.0.113.10', nodes: 1, relays: 2 },
          { name: 'c', tag: 'toolong', kind: 'public' },
        ],
      }),
    );
    expect(e.issues).toContain('sites[2].tag: 1–3 lower-case letters or digits');
    const e2 = errorOf(() =>
      resolveTopology({
        sites: [
          { name: 'a', tag: 'a', kind: 'nat', lan: '10.244.5.0/24', wanIp: '203.0.113.10' },
          { name: 'a', tag: 'a', kind: 'public', firstPublicIp: '203.0.113.10', nodes: 1, relays: 2 },
        ],
      }),
    );
    expect(e2.issues).toEqual(
      expect.arrayContaining([
        'sites[1].name: duplicate site a',
        'sites[1].tag: duplicate tag a',
        'sites[1].relays: 2 relays but only 1 nodes',
        'node a-1: address 203.0.113.10 is already used by router of a',
        'networks 10.244.5.0/24 and 10.244.0.0/16 overlap',
      ]),
    );
  });

  it('loads an override file (YAML) and names the file in errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'em-topo-'));
    try {
      const good = join(dir, 'lab.yaml');
      await writeFile(
        good,
        [
          'nodesPerSite: 1',
          'podsPerNode: 3',
          'sites:',
          '  - { name: dc, tag: d, kind: public, relays: 1, firstPublicIp: 198.51.100.20 }',
          '  - { name: shop, tag: s, kind: nat, lan: 172.16.5.0/24, wanIp: 198.51.100.30, symmetricNat: true }',
          'internet: { cidr: 198.51.100.0/24, gateway: 198.51.100.1 }',
          'apiServer: { ip: 198.51.100.2, port: 6443 }',
        ].join('\n'),
      );
      const t = await loadTopologyFile(good);
      expect(t.nodes.map((n) => `${n.name}@${n.ip}`)).toEqual(['dc-1@198.51.100.20', 'shop-1@172.16.5.11']);
      expect(t.routers[0]!.nat).toBe('symmetric');
      const bad = join(dir, 'bad.yaml');
      await writeFile(bad, 'sites: [{ name: x, kind: cloud }]\n');
      await expect(loadTopologyFile(bad)).rejects.toThrow(bad);
      await expect(loadTopologyFile(join(dir, 'missing.yaml'))).rejects.toThrow('cannot read the topology file');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('gives each NAT site a NAT kind: topology field, --nat per site or for all, --symmetric-nat shorthand', () => {
    const kinds = (t: ReturnType<typeof defaultTopology>) => t.routers.map((r) => `${r.site}=${r.nat}`);
    expect(kinds(defaultTopology({ nat: { 'edge-a': 'remap', 'edge-b': 'udp-blocked' } }))).toEqual([
      'edge-a=remap',
      'edge-b=udp-blocked',
    ]);
    expect(kinds(defaultTopology({ nat: 'symmetric' }))).toEqual(['edge-a=symmetric', 'edge-b=symmetric']);
    expect(kinds(defaultTopology({ symmetricNat: ['edge-b'], nat: { 'edge-a': 'remap' } }))).toEqual([
      'edge-a=remap',
      'edge-b=symmetric',
    ]);
    const fromFile = resolveTopology({
      sites: [
        { name: 'dc', tag: 'd', kind: 'public', relays: 1, firstPublicIp: '203.0.113.10' },
        { name: 'shop', tag: 's', kind: 'nat', lan: '172.16.5.0/24', wanIp: '203.0.113.30', nat: 'remap' },
      ],
    });
    expect(kinds(fromFile)).toEqual(['shop=remap']);
    // --nat overrides the file's kind.
    expect(
      kinds(
        resolveTopology(
          {
            sites: [{ name: 'shop', tag: 's', kind: 'nat', lan: '172.16.5.0/24', wanIp: '203.0.113.30', nat: 'remap' }],
          },
          { nat: { shop: 'masquerade' } },
        ),
      ),
    ).toEqual(['shop=masquerade']);
  });

  it('splits the public ports 1024-65535 into one disjoint block per node behind a NAT', () => {
    const t = defaultTopology({ nodesPerSite: 3 });
    const blocks = t.routers[0]!.portBlocks;
    expect(blocks.map((b) => [b.node, b.ip, b.first, b.last])).toEqual([
      ['edge-a-1', '192.168.10.11', 1024, 22527],
      ['edge-a-2', '192.168.10.12', 22528, 44031],
      ['edge-a-3', '192.168.10.13', 44032, 65535],
    ]);
  });

  it('lists each site with its NAT kind for lab status', () => {
    const sites = labSites({ topology: defaultTopology({ nat: { 'edge-a': 'remap' }, symmetricNat: ['edge-b'] }) });
    expect(sites.map((s) => [s.name, s.kind, s.nat, s.wanIp, s.network, s.nodes.length])).toEqual([
      ['cloud', 'public', undefined, undefined, '203.0.113.0/24', 2],
      ['edge-a', 'nat', 'remap', '203.0.113.101', '192.168.10.0/24', 2],
      ['edge-b', 'nat', 'symmetric', '203.0.113.102', '192.168.20.0/24', 2],
    ]);
    expect(sites[1]!.description).toBe(
      'remap: SNAT into a port block per node (edge-a-1 1024-33279, edge-a-2 33280-65535)',
    );
  });

  it('refuses unknown NAT kinds, unknown sites and contradictions with clear errors', () => {
    expect(errorOf(() => defaultTopology({ nat: { 'edge-c': 'remap' } })).issues).toEqual([
      'nat: edge-c is not a nat site (nat sites: edge-a, edge-b)',
    ]);
    expect(errorOf(() => defaultTopology({ nat: { cloud: 'remap' } })).issues[0]).toContain('cloud is not a nat site');
    expect(errorOf(() => defaultTopology({ symmetricNat: ['edge-a'], nat: { 'edge-a': 'remap' } })).issues).toEqual([
      'edge-a: --symmetric-nat contradicts --nat edge-a=remap',
    ]);
    const e = errorOf(() =>
      resolveTopology({
        sites: [
          { name: 'dc', tag: 'd', kind: 'public', firstPublicIp: '203.0.113.10', nat: 'remap' },
          { name: 'x', tag: 'x', kind: 'nat', lan: '172.16.5.0/24', wanIp: '203.0.113.30', nat: 'full-cone' },
        ],
      }),
    );
    expect(e.issues).toEqual([
      'sites[1].nat: Invalid option: expected one of "masquerade"|"remap"|"symmetric"|"udp-blocked"',
    ]);
    const e2 = errorOf(() =>
      resolveTopology({
        sites: [
          { name: 'dc', tag: 'd', kind: 'public', firstPublicIp: '203.0.113.10', nat: 'remap' },
          {
            name: 'x',
            tag: 'x',
            kind: 'nat',
            lan: '172.16.5.0/24',
            wanIp: '203.0.113.30',
            nat: 'remap',
            symmetricNat: true,
          },
        ],
      }),
    );
    expect(e2.issues).toEqual([
      'sites[0]: nat/symmetricNat are for nat sites (a public site has no NAT router)',
      'sites[1]: symmetricNat: true contradicts nat: remap',
    ]);
  });

  it('parses --nat options', () => {
    expect(parseNatOption(['remap'])).toBe('remap');
    expect(parseNatOption(['edge-a=remap,edge-b=symmetric'])).toEqual({ 'edge-a': 'remap', 'edge-b': 'symmetric' });
    expect(parseNatOption(['edge-a=remap', 'edge-b=udp-blocked'])).toEqual({
      'edge-a': 'remap',
      'edge-b': 'udp-blocked',
    });
    const issues = (v: string[]) => {
      try {
        parseNatOption(v);
      } catch (err) {
        return (err as ConfigError).issues;
      }
      throw new Error('expected a ConfigError');
    };
    expect(issues(['edge-a=cone'])).toEqual([
      '"cone": unknown NAT kind (expected one of masquerade, remap, symmetric, udp-blocked)',
    ]);
    expect(issues(['remap,edge-a=symmetric'])).toEqual([
      'give either one NAT kind for every site (--nat remap) or SITE=KIND pairs, not both',
    ]);
    expect(issues(['remap,symmetric'])).toEqual([
      '"symmetric": one NAT kind for every site, but remap was given already',
    ]);
    expect(issues(['edge-a=remap,edge-a=symmetric'])).toEqual(['"edge-a=symmetric": edge-a is named twice']);
    expect(issues(['Edge A=remap'])).toEqual(['"Edge A=remap": "Edge A" is not a site name']);
    expect(issues(['edge-a=remap,'])).toEqual(['empty entry: expected KIND or SITE=KIND[,SITE=KIND]']);
  });

  it('parses --netem options', () => {
    expect(parseNetemOption('edge-a:delay=40ms,jitter=5ms,loss=1.5%')).toEqual([
      'edge-a',
      { delayMs: 40, jitterMs: 5, lossPct: 1.5 },
    ]);
    expect(() => parseNetemOption('edge-a')).toThrow('expected SITE:');
    expect(() => parseNetemOption('edge-a:speed=1')).toThrow('expected delay=Nms');
    expect(() => parseNetemOption('edge-a:loss=200%')).toThrow('lossPct');
  });
});
