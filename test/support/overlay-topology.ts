// A minimal NAT lab for the overlay tests: an "internet" bridge (203.0.113.0/24, TEST-NET-3)
// with a public relay node and two edge sites, each a LAN behind its own NAT router
// (MASQUERADE, inbound only for established flows). Everything lives in namespaces this
// builder creates, with a per-run prefix; destroy() removes them all. Site A can hold a
// second node behind the same NAT (`secondNodeA`), the case a cluster-wide punch port breaks.

import { run } from '../../common/exec.ts';
import { createNetns, deleteNetns, runPrefix } from '../../common/netns.ts';

export interface Site {
  router: string;
  node: string;
  wanIp: string;
  lanIp: string;
  nodeIp: string;
}

export interface TopologyOptions {
  randomFullyB?: boolean;
  /** Site A's NAT symmetric too (both sites endpoint-dependent: only a relay joins them). */
  randomFullyA?: boolean;
  /** A second node on site A's LAN (10.1.0.3), behind the same NAT as node A. */
  secondNodeA?: boolean;
}

export interface NatTopology {
  prefix: string;
  inet: string;
  relay: { ns: string; ip: string };
  /** A host on the internet that is NOT a cluster member (for the gate test). */
  stranger: { ns: string; ip: string };
  /** A public cluster member that is not a relay (for the public → NAT'd tests). */
  pub: { ns: string; ip: string };
  siteA: Site;
  siteB: Site;
  /** The second node behind site A's NAT (only with `secondNodeA`). */
  a2: { ns: string; ip: string } | undefined;
  namespaces: string[];
  destroy(): Promise<void>;
}

const ip = (ns: string, args: string[]) => run('ip', ['-n', ns, ...args]);
const ipt = (ns: string, args: string[]) => run('ip', ['netns', 'exec', ns, 'iptables', '-w', ...args]);

export async function createNatTopology(opts: TopologyOptions = {}): Promise<NatTopology> {
  const prefix = runPrefix('ov');
  const names = {
    inet: `${prefix}inet`,
    relay: `${prefix}relay`,
    stranger: `${prefix}strgr`,
    pub: `${prefix}pub`,
    ra: `${prefix}ra`,
    rb: `${prefix}rb`,
    a: `${prefix}a`,
    b: `${prefix}b`,
    ...(opts.secondNodeA ? { a2: `${prefix}a2` } : {}),
  };
  const namespaces = Object.values(names);
  const topo: NatTopology = {
    prefix,
    inet: names.inet,
    relay: { ns: names.relay, ip: '203.0.113.10' },
    stranger: { ns: names.stranger, ip: '203.0.113.66' },
    pub: { ns: names.pub, ip: '203.0.113.20' },
    siteA: { router: names.ra, node: names.a, wanIp: '203.0.113.1', lanIp: '10.1.0.1', nodeIp: '10.1.0.2' },
    siteB: { router: names.rb, node: names.b, wanIp: '203.0.113.2', lanIp: '10.2.0.1', nodeIp: '10.2.0.2' },
    a2: names.a2 === undefined ? undefined : { ns: names.a2, ip: '10.1.0.3' },
    namespaces,
    destroy: async () => {
      await Promise.all(namespaces.map(deleteNetns));
    },
  };
  try {
    for (const ns of namespaces) await createNetns(ns);
    await ip(names.inet, ['link', 'add', 'br0', 'type', 'bridge']);
    await ip(names.inet, ['link', 'set', 'br0', 'up']);
    // Internet members: one veth each into the bridge.
    const attach = async (ns: string, tag: string, addr: string) => {
      await ip(names.inet, ['link', 'add', `p-${tag}`, 'type', 'veth', 'peer', 'name', 'wan', 'netns', ns]);
      await ip(names.inet, ['link', 'set', `p-${tag}`, 'master', 'br0', 'up']);
      await ip(ns, ['addr', 'add', `${addr}/24`, 'dev', 'wan']);
      await ip(ns, ['link', 'set', 'wan', 'up']);
    };
    await attach(names.relay, 'relay', topo.relay.ip);
    await attach(names.stranger, 'strgr', topo.stranger.ip);
    await attach(names.pub, 'pub', topo.pub.ip);
    for (const [site, random] of [
      [topo.siteA, opts.randomFullyA === true],
      [topo.siteB, opts.randomFullyB === true],
    ] as const) {
      await attach(site.router, site.router === names.ra ? 'ra' : 'rb', site.wanIp);
      // The LAN is a bridge in the router, so a site can hold several nodes.
      await ip(site.router, ['link', 'add', 'lan', 'type', 'bridge']);
      await ip(site.router, ['addr', 'add', `${site.lanIp}/24`, 'dev', 'lan']);
      await ip(site.router, ['link', 'set', 'lan', 'up']);
      const lanNodes = [{ ns: site.node, ip: site.nodeIp }];
      if (site === topo.siteA && topo.a2 !== undefined) lanNodes.push(topo.a2);
      for (const [i, n] of lanNodes.entries()) {
        await ip(site.router, ['link', 'add', `l${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.ns]);
        await ip(site.router, ['link', 'set', `l${i}`, 'master', 'lan', 'up']);
        await ip(n.ns, ['addr', 'add', `${n.ip}/24`, 'dev', 'eth0']);
        await ip(n.ns, ['link', 'set', 'eth0', 'up']);
        await ip(n.ns, ['route', 'add', 'default', 'via', site.lanIp]);
      }
      await run('ip', ['netns', 'exec', site.router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      // A home/carrier router: masquerade outbound, drop unsolicited inbound.
      await ipt(site.router, [
        '-t',
        'nat',
        '-A',
        'POSTROUTING',
        '-o',
        'wan',
        '-j',
        'MASQUERADE',
        ...(random ? ['--random-fully'] : []),
      ]);
      await ipt(site.router, ['-P', 'FORWARD', 'DROP']);
      await ipt(site.router, ['-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT']);
      await ipt(site.router, ['-A', 'FORWARD', '-i', 'lan', '-o', 'wan', '-j', 'ACCEPT']);
      // The router itself accepts nothing new from the internet either.
      await ipt(site.router, [
        '-A',
        'INPUT',
        '-i',
        'wan',
        '-m',
        'conntrack',
        '--ctstate',
        'ESTABLISHED,RELATED',
        '-j',
        'ACCEPT',
      ]);
      await ipt(site.router, ['-A', 'INPUT', '-i', 'wan', '-j', 'DROP']);
    }
    return topo;
  } catch (err) {
    await topo.destroy();
    throw err;
  }
}

/** Cuts (or restores) the direct path between the two sites at site A's router. */
export async function setDirectPathCut(topo: NatTopology, cut: boolean): Promise<void> {
  const rule = ['FORWARD', '-s', topo.siteB.wanIp, '-j', 'DROP'];
  const rule2 = ['FORWARD', '-d', topo.siteB.wanIp, '-j', 'DROP'];
  await ipt(topo.siteA.router, [cut ? '-I' : '-D', ...rule]);
  await ipt(topo.siteA.router, [cut ? '-I' : '-D', ...rule2]);
}

/** Drops (or restores) all UDP crossing site A's router, as a router that blocks UDP would. */
export async function setUdpBlockedAtA(topo: NatTopology, blocked: boolean): Promise<void> {
  await ipt(topo.siteA.router, [blocked ? '-I' : '-D', 'FORWARD', '-p', 'udp', '-j', 'DROP']);
}
