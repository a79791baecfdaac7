// The lab's declarative topology: which sites exist, how they reach the "internet", and
// every address, namespace and interface name derived from that. A file (YAML or JSON)
// overrides the built-in default; the result is validated (zod) and then resolved into
// concrete nodes and routers, so network.ts only executes a plan and never decides one.
//
// Hygiene is enforced here, not hoped for: the internet segment must lie in a TEST-NET
// range (RFC 5737), site LANs and cluster CIDRs in RFC 1918 / ULA space.
import { readFile } from 'node:fs/promises';
import ipaddr from 'ipaddr.js';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, parseConfig } from '../common/config.ts';

const TEST_NETS = ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24'];
const PRIVATE_V4 = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'];
const ULA_V6 = ['fc00::/7'];

const dnsLabel = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'lower-case letters, digits and dashes')
  .max(24);
const ipv4 = z.string().refine((s) => ipaddr.IPv4.isValidFourPartDecimal(s), 'expected an IPv4 address');
const cidr = z.string().refine((s) => ipaddr.isValidCIDR(s), 'expected a CIDR like 10.244.0.0/16');

/**
 * What a NAT site's router does to traffic between its LAN and the internet (every kind
 * drops unsolicited inbound, as home and carrier routers do):
 *   masquerade   port-preserving MASQUERADE (keeps a node's source port while the tuple is free)
 *   remap        endpoint-independent mapping onto other ports: each node owns a block of the
 *                router's public ports (as carrier NATs with port-block allocation do) and a
 *                source port maps to the same public port for every destination
 *   symmetric    MASQUERADE --random-fully: a fresh random port per destination
 *                (endpoint-dependent mapping; hole punching needs port prediction or a relay)
 *   udp-blocked  masquerade, but every UDP datagram between LAN and internet is dropped (TCP only)
 */
export const NAT_KINDS = ['masquerade', 'remap', 'symmetric', 'udp-blocked'] as const;
export const NatKindSchema = z.enum(NAT_KINDS);
export type NatKind = z.infer<typeof NatKindSchema>;

export const NetemSchema = z
  .object({
    delayMs: z.number().min(0).max(10_000).default(0),
    jitterMs: z.number().min(0).max(10_000).default(0),
    lossPct: z.number().min(0).max(100).default(0),
  })
  .strict();
export type Netem = z.infer<typeof NetemSchema>;

export const SiteSchema = z
  .object({
    name: dnsLabel,
    /** Short id (1–3 chars) used in namespace and interface names, which are limited to 15 chars. */
    tag: z.string().regex(/^[a-z0-9]{1,3}$/, '1–3 lower-case letters or digits'),
    /** public: nodes sit directly on the internet; nat: nodes on a LAN behind a NAT router. */
    kind: z.enum(['public', 'nat']),
    /** Nodes in this site (defaults to the topology's nodesPerSite). */
    nodes: z.number().int().min(1).max(20).optional(),
    /** How many of the site's first nodes are relays (public sites only). */
    relays: z.number().int().min(0).max(20).default(0),
    /** public sites: address of the first node; the next nodes take the following addresses. */
    firstPublicIp: ipv4.optional(),
    /** nat sites: the LAN (RFC 1918); the router takes .1, nodes start at .11. */
    lan: cidr.optional(),
    /** nat sites: the router's WAN address on the internet. */
    wanIp: ipv4.optional(),
    /** nat sites: the router's NAT kind (default masquerade). */
    nat: NatKindSchema.optional(),
    /** nat sites: shorthand for `nat: symmetric` (kept for existing topology files). */
    symmetricNat: z.boolean().optional(),
    /** Delay/loss (tc netem) on the site's uplink, both directions. */
    netem: NetemSchema.optional(),
    /** Pins the agents' data transport (`overlay.transport`), e.g. `stream` to measure the fallback. */
    transport: z.enum(['auto', 'udp', 'stream']).optional(),
  })
  .strict();
export type SiteSpec = z.infer<typeof SiteSchema>;

export const TopologySchema = z
  .object({
    internet: z
      .object({ cidr: cidr.default('203.0.113.0/24'), gateway: ipv4.default('203.0.113.1') })
      .strict()
      .default({ cidr: '203.0.113.0/24', gateway: '203.0.113.1' }),
    apiServer: z
      .object({ ip: ipv4.default('203.0.113.2'), port: z.number().int().min(1).max(65535).default(6443) })
      .strict()
      .default({ ip: '203.0.113.2', port: 6443 }),
    nodesPerSite: z.number().int().min(1).max(20).default(2),
    podsPerNode: z.number().int().min(0).max(20).default(2),
    dualStack: z.boolean().default(false),
    /** Overrides the default cluster CIDRs (10.244.0.0/16, plus fd00:10:244::/56 with dualStack). */
    clusterCidrs: z.array(cidr).min(1).max(2).optional(),
    sites: z.array(SiteSchema).min(1).max(8),
  })
  .strict();
export type TopologySpec = z.input<typeof TopologySchema>;

/** The built-in topology: a public cloud site with a relay, and two edge sites behind NAT. */
export const DEFAULT_TOPOLOGY: TopologySpec = {
  internet: { cidr: '203.0.113.0/24', gateway: '203.0.113.1' },
  apiServer: { ip: '203.0.113.2', port: 6443 },
  nodesPerSite: 2,
  podsPerNode: 2,
  dualStack: false,
  sites: [
    { name: 'cloud', tag: 'c', kind: 'public', relays: 1, firstPublicIp: '203.0.113.10' },
    { name: 'edge-a', tag: 'a', kind: 'nat', lan: '192.168.10.0/24', wanIp: '203.0.113.101' },
    { name: 'edge-b', tag: 'b', kind: 'nat', lan: '192.168.20.0/24', wanIp: '203.0.113.102' },
  ],
};

export interface ResolvedRouter {
  /** Dual-stack only: the router's LAN IPv6 address (…::1) and the LAN's /64. */
  lanIpV6?: string;
  lanCidrV6?: string;
  site: string;
  tag: string;
  /** Namespace name without the lab prefix. */
  netnsSuffix: string;
  wanIp: string;
  lanCidr: string;
  lanIp: string;
  nat: NatKind;
  /**
   * The public port block of each node behind this router, used by the `remap` kind: node
   * i's sources map into its own block (blocks split 1024–65535 evenly among the nodes).
   */
  portBlocks: PortBlock[];
  netem?: Netem;
}

export interface PortBlock {
  node: string;
  ip: string;
  first: number;
  last: number;
}

export interface ResolvedNode {
  /** Kubernetes Node name, e.g. "edge-a-1". */
  name: string;
  site: string;
  siteKind: 'public' | 'nat';
  /** Short id for names, e.g. "a1". */
  tag: string;
  netnsSuffix: string;
  /** The node's address in its site (the public address on public sites). */
  ip: string;
  prefixLength: number;
  /** The default gateway: the internet gateway (public) or the site router's LAN address. */
  gateway: string;
  /** Set on public sites only: behind NAT a node has no public address of its own. */
  publicIp?: string;
  /**
   * Dual-stack only: the node's IPv6 address on its site segment (ULA /64, no route beyond
   * it: the NAT routers do not route IPv6), so same-site IPv6 pod traffic can use host-gw.
   */
  ipv6?: string;
  relay: boolean;
  netem?: Netem;
  /** The site's pinned data transport, when its spec sets one. */
  transport?: 'auto' | 'udp' | 'stream';
  pods: ResolvedPod[];
}

export interface ResolvedPod {
  /** Pod name, e.g. "edge-a-1-p1"; also the CNI container id's base. */
  name: string;
  node: string;
  netnsSuffix: string;
}

export interface ResolvedTopology {
  internet: { cidr: string; gateway: string; prefixLength: number; gatewayV6?: string; cidrV6?: string };
  apiServer: { ip: string; port: number };
  clusterCidrs: string[];
  dualStack: boolean;
  routers: ResolvedRouter[];
  nodes: ResolvedNode[];
}

export interface TopologyOverrides {
  nodesPerSite?: number;
  podsPerNode?: number;
  dualStack?: boolean;
  /** true: every NAT site uses a symmetric NAT; a list: only these sites (shorthand for `nat`). */
  symmetricNat?: boolean | string[];
  /** One NAT kind for every NAT site, or site name → NAT kind. Overrides the topology's. */
  nat?: NatKind | Record<string, NatKind>;
  /** Site name → netem on its uplink. */
  netem?: Record<string, Netem>;
}

function cidrInside(inner: string, ranges: string[]): boolean {
  const [addr, len] = ipaddr.parseCIDR(inner);
  return ranges.some((r) => {
    const [raddr, rlen] = ipaddr.parseCIDR(r);
    return addr.kind() === raddr.kind() && len >= rlen && addr.match(raddr, rlen);
  });
}

function cidrsOverlap(a: string, b: string): boolean {
  const [aa, al] = ipaddr.parseCIDR(a);
  const [ba, bl] = ipaddr.parseCIDR(b);
  return aa.kind() === ba.kind() && aa.match(ba, Math.min(al, bl));
}

/** The public ports a `remap` router hands out, split into one block per node behind it. */
export const PORT_BLOCKS_START = 1024;
export const PORT_BLOCKS_END = 65535;

/** Site segments' IPv6 (dual-stack): one ULA /64 per segment out of this /48. */
export const UNDERLAY_V6 = 'fd00:ed6e::/48';

/** The /64 of segment `index` (0 = the internet bridge, i+1 = site i's LAN) and a host in it. */
function underlayV6(index: number, host?: number): string {
  const net = `fd00:ed6e:${index.toString(16)}::`;
  return host === undefined ? `${net}/64` : `${net}${host.toString(16)}`;
}

function v4ToInt(addr: string): number {
  return ipaddr.IPv4.parse(addr).octets.reduce((n, o) => n * 256 + o, 0);
}

function intToV4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** The address `offset` after `base`, checked to stay inside `within` (network and broadcast excluded). */
function hostAt(within: string, base: string, offset: number, what: string, issues: string[]): string {
  const [net, len] = ipaddr.parseCIDR(within);
  const size = 2 ** (32 - len);
  const first = Math.floor(v4ToInt(net.toString()) / size) * size; // no bitwise ops: they are signed 32-bit
  const n = v4ToInt(base) + offset;
  const last = first + size - 1;
  if (n <= first || n >= last) issues.push(`${what}: ${intToV4(n)} is not a host address of ${within}`);
  return intToV4(n);
}

/** Validates a topology document and resolves it into concrete nodes, routers and pods. */
export function resolveTopology(
  input: unknown,
  overrides: TopologyOverrides = {},
  source = 'topology',
): ResolvedTopology {
  const spec = parseConfig(TopologySchema, input, source);
  const issues: string[] = [];
  const nodesPerSite = overrides.nodesPerSite ?? spec.nodesPerSite;
  const podsPerNode = overrides.podsPerNode ?? spec.podsPerNode;
  const dualStack = overrides.dualStack ?? spec.dualStack;

  const internet = spec.internet;
  if (!cidrInside(internet.cidr, TEST_NETS))
    issues.push(`internet.cidr: ${internet.cidr} must lie in a TEST-NET range (${TEST_NETS.join(', ')})`);
  const inetLen = ipaddr.parseCIDR(internet.cidr)[1];
  const onInternet = (addr: string, what: string) => {
    if (!ipaddr.parse(addr).match(ipaddr.parseCIDR(internet.cidr)))
      issues.push(`${what}: ${addr} is not in ${internet.cidr}`);
  };
  onInternet(internet.gateway, 'internet.gateway');
  onInternet(spec.apiServer.ip, 'apiServer.ip');

  const clusterCidrs = spec.clusterCidrs ?? (dualStack ? ['10.244.0.0/16', 'fd00:10:244::/56'] : ['10.244.0.0/16']);
  for (const c of clusterCidrs) {
    if (!cidrInside(c, [...PRIVATE_V4, ...ULA_V6]))
      issues.push(`clusterCidrs: ${c} must be RFC 1918 or ULA (fc00::/7)`);
  }
  if (dualStack && !clusterCidrs.some((c) => c.includes(':')))
    issues.push('dualStack needs an IPv6 entry in clusterCidrs');

  const natOverride = (site: string): NatKind | undefined =>
    typeof overrides.nat === 'string' ? overrides.nat : overrides.nat?.[site];
  const symmetricOverride = (site: string): boolean =>
    Array.isArray(overrides.symmetricNat) ? overrides.symmetricNat.includes(site) : overrides.symmetricNat === true;
  /** The site's NAT kind: command-line overrides first, then the topology's own fields. */
  const natKind = (site: SiteSpec, where: string): NatKind => {
    if (site.nat !== undefined && site.symmetricNat === true && site.nat !== 'symmetric')
      issues.push(`${where}: symmetricNat: true contradicts nat: ${site.nat}`);
    const own = site.nat ?? (site.symmetricNat ? 'symmetric' : 'masquerade');
    const fromNat = natOverride(site.name);
    if (symmetricOverride(site.name)) {
      if (fromNat !== undefined && fromNat !== 'symmetric')
        issues.push(`${site.name}: --symmetric-nat contradicts --nat ${site.name}=${fromNat}`);
      return 'symmetric';
    }
    return fromNat ?? own;
  };

  const seenNames = new Set<string>();
  const seenTags = new Set<string>();
  const routers: ResolvedRouter[] = [];
  const nodes: ResolvedNode[] = [];
  const lans: string[] = [];
  for (const [i, site] of spec.sites.entries()) {
    const where = `sites[${i}]`;
    if (seenNames.has(site.name)) issues.push(`${where}.name: duplicate site ${site.name}`);
    if (seenTags.has(site.tag)) issues.push(`${where}.tag: duplicate tag ${site.tag}`);
    seenNames.add(site.name);
    seenTags.add(site.tag);
    const count = site.nodes ?? nodesPerSite;
    const netem = overrides.netem?.[site.name] ?? site.netem;
    const makePods = (nodeName: string, nodeTag: string): ResolvedPod[] =>
      Array.from({ length: podsPerNode }, (_, p) => ({
        name: `${nodeName}-p${p + 1}`,
        node: nodeName,
        netnsSuffix: `p-${nodeTag}-${p + 1}`,
      }));
    if (site.kind === 'public') {
      if (!site.firstPublicIp) {
        issues.push(`${where}.firstPublicIp: required for a public site`);
        continue;
      }
      if (site.lan || site.wanIp) issues.push(`${where}: lan/wanIp are for nat sites`);
      if (site.nat !== undefined || site.symmetricNat !== undefined)
        issues.push(`${where}: nat/symmetricNat are for nat sites (a public site has no NAT router)`);
      if (site.relays > count) issues.push(`${where}.relays: ${site.relays} relays but only ${count} nodes`);
      for (let n = 0; n < count; n++) {
        const name = `${site.name}-${n + 1}`;
        const tag = `${site.tag}${n + 1}`;
        const ip = hostAt(internet.cidr, site.firstPublicIp, n, `${where}.firstPublicIp`, issues);
        nodes.push({
          name,
          site: site.name,
          siteKind: 'public',
          tag,
          netnsSuffix: `n-${tag}`,
          ip,
          prefixLength: inetLen,
          gateway: internet.gateway,
          publicIp: ip,
          ...(dualStack ? { ipv6: underlayV6(0, v4ToInt(ip) % 2 ** (32 - inetLen)) } : {}),
          relay: n < site.relays,
          ...(netem ? { netem } : {}),
          ...(site.transport ? { transport: site.transport } : {}),
          pods: makePods(name, tag),
        });
      }
    } else {
      if (!site.lan || !site.wanIp) {
        issues.push(`${where}: a nat site needs lan and wanIp`);
        continue;
      }
      if (site.relays > 0) issues.push(`${where}.relays: relays need a public address (use a public site)`);
      if (!cidrInside(site.lan, PRIVATE_V4)) issues.push(`${where}.lan: ${site.lan} must be RFC 1918`);
      onInternet(site.wanIp, `${where}.wanIp`);
      lans.push(site.lan);
      const [lanNet, lanLen] = ipaddr.parseCIDR(site.lan);
      const lanBase = lanNet.toString();
      const lanIp = hostAt(site.lan, lanBase, 1, `${where}.lan`, issues);
      routers.push({
        site: site.name,
        tag: site.tag,
        netnsSuffix: `rtr-${site.tag}`,
        wanIp: site.wanIp,
        lanCidr: site.lan,
        lanIp,
        ...(dualStack ? { lanIpV6: underlayV6(i + 1, 1), lanCidrV6: underlayV6(i + 1) } : {}),
        nat: natKind(site, where),
        portBlocks: [],
        ...(netem ? { netem } : {}),
      });
      const router = routers.at(-1)!;
      const blockSize = Math.floor((PORT_BLOCKS_END - PORT_BLOCKS_START + 1) / count);
      for (let n = 0; n < count; n++) {
        const name = `${site.name}-${n + 1}`;
        const tag = `${site.tag}${n + 1}`;
        const ip = hostAt(site.lan, lanBase, 11 + n, `${where}.lan`, issues);
        const first = PORT_BLOCKS_START + n * blockSize;
        router.portBlocks.push({ node: name, ip, first, last: first + blockSize - 1 });
        nodes.push({
          name,
          site: site.name,
          siteKind: 'nat',
          tag,
          netnsSuffix: `n-${tag}`,
          ip,
          prefixLength: lanLen,
          gateway: lanIp,
          ...(dualStack ? { ipv6: underlayV6(i + 1, 11 + n) } : {}),
          relay: false,
          ...(site.transport ? { transport: site.transport } : {}),
          pods: makePods(name, tag),
        });
      }
    }
  }
  if (Array.isArray(overrides.symmetricNat)) {
    for (const s of overrides.symmetricNat) {
      if (!routers.some((r) => r.site === s)) issues.push(`symmetricNat: ${s} is not a nat site`);
    }
  }
  if (overrides.nat !== undefined && typeof overrides.nat !== 'string') {
    for (const [s, kind] of Object.entries(overrides.nat)) {
      if (!routers.some((r) => r.site === s))
        issues.push(`nat: ${s} is not a nat site (nat sites: ${routers.map((r) => r.site).join(', ') || 'none'})`);
      if (!NatKindSchema.safeParse(kind).success)
        issues.push(`nat: ${s}=${kind}: expected one of ${NAT_KINDS.join(', ')}`);
    }
  } else if (overrides.nat !== undefined && !NatKindSchema.safeParse(overrides.nat).success) {
    issues.push(`nat: ${overrides.nat}: expected one of ${NAT_KINDS.join(', ')}`);
  }
  for (const s of Object.keys(overrides.netem ?? {})) {
    if (!seenNames.has(s)) issues.push(`netem: ${s} is not a site`);
  }

  // Every address on the internet segment must be unique, and no two networks may overlap.
  const publicAddrs = [
    ['internet.gateway', internet.gateway],
    ['apiServer.ip', spec.apiServer.ip],
    ...routers.map((r) => [`router of ${r.site}`, r.wanIp]),
    ...nodes.filter((n) => n.publicIp).map((n) => [`node ${n.name}`, n.publicIp as string]),
  ];
  const owners = new Map<string, string>();
  for (const [who, addr] of publicAddrs as [string, string][]) {
    const prev = owners.get(addr);
    if (prev) issues.push(`${who}: address ${addr} is already used by ${prev}`);
    owners.set(addr, who);
  }
  const networks = [internet.cidr, ...lans, ...clusterCidrs, ...(dualStack ? [UNDERLAY_V6] : [])];
  for (let a = 0; a < networks.length; a++) {
    for (let b = a + 1; b < networks.length; b++) {
      if (cidrsOverlap(networks[a]!, networks[b]!)) issues.push(`networks ${networks[a]} and ${networks[b]} overlap`);
    }
  }
  if (issues.length > 0) throw new ConfigError(source, issues);

  return {
    internet: {
      cidr: internet.cidr,
      gateway: internet.gateway,
      prefixLength: inetLen,
      ...(dualStack ? { cidrV6: underlayV6(0), gatewayV6: underlayV6(0, 1) } : {}),
    },
    apiServer: spec.apiServer,
    clusterCidrs,
    dualStack,
    routers,
    nodes,
  };
}

/** Reads a topology override file (YAML or JSON; JSON is valid YAML). */
export async function loadTopologyFile(path: string, overrides: TopologyOverrides = {}): Promise<ResolvedTopology> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`cannot read the topology file: ${(err as Error).message}`]);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(path, [`not valid YAML/JSON: ${(err as Error).message}`]);
  }
  return resolveTopology(doc, overrides, path);
}

/** The built-in topology with the given overrides (what `lab up` uses without --topology). */
export function defaultTopology(overrides: TopologyOverrides = {}): ResolvedTopology {
  return resolveTopology(DEFAULT_TOPOLOGY, overrides, 'built-in topology');
}

/**
 * The smallest topology that still shows every path: one relay node on the internet and
 * one node in each of two NAT sites. Meant for the overlay tests (no pods).
 */
export function minimalTopology(
  opts: { symmetricNat?: boolean | string[]; nat?: TopologyOverrides['nat']; podsPerNode?: number } = {},
): ResolvedTopology {
  return defaultTopology({
    nodesPerSite: 1,
    podsPerNode: opts.podsPerNode ?? 0,
    symmetricNat: opts.symmetricNat ?? false,
    ...(opts.nat !== undefined ? { nat: opts.nat } : {}),
  });
}

/**
 * Parses `--nat` values: one NAT kind for every NAT site (`--nat remap`) or per site
 * (`--nat edge-a=remap,edge-b=symmetric`); repeated options are merged.
 */
export function parseNatOption(values: readonly string[]): NatKind | Record<string, NatKind> {
  const issues: string[] = [];
  const perSite: Record<string, NatKind> = {};
  let everywhere: NatKind | undefined;
  const kind = (text: string): NatKind | undefined => {
    const parsed = NatKindSchema.safeParse(text);
    if (!parsed.success) issues.push(`"${text}": unknown NAT kind (expected one of ${NAT_KINDS.join(', ')})`);
    return parsed.success ? parsed.data : undefined;
  };
  for (const part of values.flatMap((v) => v.split(',')).map((p) => p.trim())) {
    if (part === '') {
      issues.push('empty entry: expected KIND or SITE=KIND[,SITE=KIND]');
      continue;
    }
    const eq = part.indexOf('=');
    if (eq < 0) {
      const k = kind(part);
      if (k && everywhere !== undefined && k !== everywhere)
        issues.push(`"${part}": one NAT kind for every site, but ${everywhere} was given already`);
      everywhere ??= k;
      continue;
    }
    const site = part.slice(0, eq);
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(site)) issues.push(`"${part}": "${site}" is not a site name`);
    if (site in perSite) issues.push(`"${part}": ${site} is named twice`);
    const k = kind(part.slice(eq + 1));
    if (k) perSite[site] = k;
  }
  if (everywhere !== undefined && Object.keys(perSite).length > 0)
    issues.push('give either one NAT kind for every site (--nat remap) or SITE=KIND pairs, not both');
  if (issues.length > 0) throw new ConfigError('--nat', issues);
  return everywhere ?? perSite;
}

/** Parses `--netem site:delay=40ms,jitter=5ms,loss=1%` into a site name and its netem. */
export function parseNetemOption(text: string): [string, Netem] {
  const m = /^([a-z0-9-]+):(.+)$/.exec(text);
  if (!m) throw new ConfigError('--netem', [`"${text}": expected SITE:delay=40ms,jitter=5ms,loss=1%`]);
  const netem: Netem = { delayMs: 0, jitterMs: 0, lossPct: 0 };
  for (const part of m[2]!.split(',')) {
    const kv = /^(delay|jitter|loss)=(\d+(?:\.\d+)?)(ms|%)?$/.exec(part.trim());
    if (!kv) throw new ConfigError('--netem', [`"${part}": expected delay=Nms, jitter=Nms or loss=N%`]);
    const value = Number(kv[2]);
    if (kv[1] === 'delay') netem.delayMs = value;
    else if (kv[1] === 'jitter') netem.jitterMs = value;
    else netem.lossPct = value;
  }
  return [m[1]!, parseConfig(NetemSchema, netem, '--netem')];
}
