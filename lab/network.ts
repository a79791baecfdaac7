// Builds the lab's network from a resolved topology: namespaces, bridges, veth pairs,
// addresses, routes, forwarding, NAT routers (iptables) and netem. Nothing is ever created
// in the root namespace: veth pairs are created with both ends directly inside lab
// namespaces (`ip link add X netns A type veth peer name Y netns B`), so deleting the
// namespaces removes every interface, route and rule the lab made.
//
// Layout (names carry the lab prefix P):
//   P inet      bridge inet0 (the "internet", TEST-NET), gateway address; one port per uplink
//   P api       eth0 on the internet: the Kubernetes API test server
//   P n-c1 ...  public nodes: eth0 on the internet
//   P rtr-a     NAT router: wan0 on the internet, bridge lan0 (site LAN), NAT of the site's
//               kind (masquerade, remap, symmetric, udp-blocked: see NAT_KINDS in topology.ts),
//               FORWARD drops unsolicited inbound (ct state new from wan0)
//   P n-a1 ...  NAT-site nodes: eth0 on the router's LAN, default route via the router
import { CommandError, run, tryRun } from '../common/exec.ts';
import { ipBatch } from '../common/host-net/index.ts';
import { deleteNetns, listNetns, runIn } from '../common/netns.ts';
import {
  type NatKind,
  type Netem,
  PORT_BLOCKS_START,
  type ResolvedNode,
  type ResolvedRouter,
  type ResolvedTopology,
} from './topology.ts';

export const INTERNET_BRIDGE = 'inet0';
export const ROUTER_WAN = 'wan0';
export const ROUTER_LAN = 'lan0';
export const NODE_IFACE = 'eth0';

export interface NodeNetwork extends ResolvedNode {
  netns: string;
}

export interface RouterNetwork extends ResolvedRouter {
  netns: string;
}

export interface LabNetwork {
  prefix: string;
  topology: ResolvedTopology;
  /** Every namespace this network consists of, in creation order. */
  namespaces: string[];
  inetNetns: string;
  apiNetns: string;
  routers: RouterNetwork[];
  nodes: NodeNetwork[];
}

export interface BuildNetworkOptions {
  /** Called with the namespace names BEFORE they are created (crash-safe state file). */
  record?: (namespaces: string[]) => void | Promise<void>;
  /** Progress lines for a human. */
  progress?: (line: string) => void;
  /**
   * Called once the namespaces exist, before links and addresses: lets the caller start
   * slow processes in them (they must tolerate a network that appears a moment later).
   */
  afterNamespaces?: (net: LabNetwork) => void | Promise<void>;
}

/** The namespaces a topology needs under `prefix`, without creating anything. */
export function planNetwork(topology: ResolvedTopology, prefix: string): LabNetwork {
  const routers = topology.routers.map((r) => ({ ...r, netns: prefix + r.netnsSuffix }));
  const nodes = topology.nodes.map((n) => ({ ...n, netns: prefix + n.netnsSuffix }));
  const inetNetns = `${prefix}inet`;
  const apiNetns = `${prefix}api`;
  return {
    prefix,
    topology,
    namespaces: [inetNetns, apiNetns, ...routers.map((r) => r.netns), ...nodes.map((n) => n.netns)],
    inetNetns,
    apiNetns,
    routers,
    nodes,
  };
}

function uplinkPort(node: NodeNetwork): string {
  return `v-${node.tag}`;
}

function routerPort(router: RouterNetwork): string {
  return `v-rtr-${router.tag}`;
}

function netemArgs(n: Netem): string[] {
  const args = ['netem'];
  if (n.delayMs > 0 || n.jitterMs > 0)
    args.push('delay', `${n.delayMs}ms`, ...(n.jitterMs > 0 ? [`${n.jitterMs}ms`] : []));
  if (n.lossPct > 0) args.push('loss', `${n.lossPct}%`);
  // netem's default queue (1000 packets) is too short for a 1 Gbit/s path with 100 ms delay.
  args.push('limit', '10000');
  return args;
}

/** A router's NAT kind; labs recorded before NAT kinds existed carry only `symmetricNat`. */
export function natKindOf(router: Pick<ResolvedRouter, 'nat'> & { symmetricNat?: boolean }): NatKind {
  return router.nat ?? (router.symmetricNat ? 'symmetric' : 'masquerade');
}

/** One line for people: what the router does (progress lines, `lab status`). */
export function describeNat(router: ResolvedRouter): string {
  switch (natKindOf(router)) {
    case 'masquerade':
      return 'masquerade: MASQUERADE, source ports kept';
    case 'remap':
      return `remap: SNAT into a port block per node (${router.portBlocks
        .map((b) => `${b.node} ${b.first}-${b.last}`)
        .join(', ')})`;
    case 'symmetric':
      return 'symmetric: MASQUERADE --random-fully, a random port per destination';
    case 'udp-blocked':
      return 'udp-blocked: MASQUERADE, all UDP between LAN and internet dropped';
  }
}

/** The nat table's POSTROUTING rules of one NAT kind. */
function snatRules(router: ResolvedRouter): string[] {
  const out = `-s ${router.lanCidr} -o ${ROUTER_WAN}`;
  switch (natKindOf(router)) {
    case 'symmetric':
      return [`-A POSTROUTING ${out} -j MASQUERADE --random-fully`];
    case 'remap':
      // SNAT with a port range and a base ("/1024") sets NF_NAT_RANGE_PROTO_OFFSET: the kernel
      // then derives the public port from the source port (first + offset mod block size)
      // instead of keeping it or picking one at random, so the mapping of one socket is the
      // same for every destination (endpoint-independent) and differs from its source port.
      // Disjoint blocks: two nodes never compete for a public port. (iptables 1.8.9 hands the
      // kernel base 0 whatever base is written; the mapping stays deterministic either way.)
      // ICMP and anything else is masqueraded.
      return [
        ...router.portBlocks.flatMap((b) =>
          ['udp', 'tcp'].map(
            (proto) =>
              `-A POSTROUTING -s ${b.ip}/32 -o ${ROUTER_WAN} -p ${proto} -j SNAT --to-source ${router.wanIp}:${b.first}-${b.last}/${PORT_BLOCKS_START}`,
          ),
        ),
        `-A POSTROUTING ${out} -j MASQUERADE`,
      ];
    default:
      return [`-A POSTROUTING ${out} -j MASQUERADE`];
  }
}

/** iptables-restore input of a home/carrier NAT router: NAT out (per kind), nothing new in. */
export function routerRules(router: ResolvedRouter): string {
  const blockUdp =
    natKindOf(router) === 'udp-blocked'
      ? [
          `-A FORWARD -i ${ROUTER_LAN} -o ${ROUTER_WAN} -p udp -j DROP`,
          `-A FORWARD -i ${ROUTER_WAN} -o ${ROUTER_LAN} -p udp -j DROP`,
        ]
      : [];
  return [
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':INPUT ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':POSTROUTING ACCEPT [0:0]',
    ...snatRules(router),
    'COMMIT',
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD DROP [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    `-A INPUT -i ${ROUTER_WAN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`,
    `-A INPUT -i ${ROUTER_WAN} -p icmp -j ACCEPT`,
    `-A INPUT -i ${ROUTER_WAN} -j DROP`,
    // The kernel has br_netfilter: frames bridged between two LAN ports also cross FORWARD.
    `-A FORWARD -i ${ROUTER_LAN} -o ${ROUTER_LAN} -j ACCEPT`,
    ...blockUdp,
    `-A FORWARD -i ${ROUTER_LAN} -o ${ROUTER_WAN} -j ACCEPT`,
    `-A FORWARD -i ${ROUTER_WAN} -o ${ROUTER_LAN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`,
    'COMMIT',
    '',
  ].join('\n');
}

/**
 * Creates the whole network. On failure everything created so far is removed again and
 * the error is rethrown, so a failed build leaves nothing behind.
 */
export async function buildNetwork(
  topology: ResolvedTopology,
  prefix: string,
  opts: BuildNetworkOptions = {},
): Promise<LabNetwork> {
  const net = planNetwork(topology, prefix);
  const progress = opts.progress ?? (() => {});
  const existing = new Set(await listNetns());
  const clash = net.namespaces.filter((ns) => existing.has(ns));
  if (clash.length > 0) throw new NamespaceClashError(clash);
  await opts.record?.(net.namespaces);
  try {
    await createAll(net, progress, opts.afterNamespaces);
    return net;
  } catch (err) {
    await destroyNetwork(net);
    throw err;
  }
}

/** Raised before anything is created when a planned namespace already exists. */
export class NamespaceClashError extends Error {
  readonly namespaces: string[];
  constructor(namespaces: string[]) {
    super(
      `namespaces already exist: ${namespaces.join(', ')} (another lab with the same prefix? \`edgemesh-cni lab down\`)`,
    );
    this.name = 'NamespaceClashError';
    this.namespaces = namespaces;
  }
}

async function createAll(
  net: LabNetwork,
  progress: (line: string) => void,
  afterNamespaces?: BuildNetworkOptions['afterNamespaces'],
): Promise<void> {
  const { topology } = net;
  const inetLen = topology.internet.prefixLength;
  const byName = new Map(net.routers.map((r) => [r.site, r]));

  // 1. Namespaces, one ip process (buildNetwork checked none of them exists yet).
  await ipBatch(net.namespaces.map((ns) => `netns add ${ns}`));
  progress(`namespaces: ${net.namespaces.length} created (${net.prefix}*)`);
  await afterNamespaces?.(net);

  // 2. veth pairs, both ends born inside lab namespaces.
  const veths: string[] = [
    `link add v-api netns ${net.inetNetns} type veth peer name ${NODE_IFACE} netns ${net.apiNetns}`,
  ];
  for (const r of net.routers) {
    veths.push(`link add ${routerPort(r)} netns ${net.inetNetns} type veth peer name ${ROUTER_WAN} netns ${r.netns}`);
  }
  for (const n of net.nodes) {
    const upstream = n.siteKind === 'public' ? net.inetNetns : byName.get(n.site)!.netns;
    veths.push(`link add ${uplinkPort(n)} netns ${upstream} type veth peer name ${NODE_IFACE} netns ${n.netns}`);
  }
  await ipBatch(veths);

  // 3. Addresses, bridges and routes: one batch per namespace, run side by side.
  const inetPorts = [
    'v-api',
    ...net.routers.map(routerPort),
    ...net.nodes.filter((n) => n.siteKind === 'public').map(uplinkPort),
  ];
  const batches: Array<Promise<unknown>> = [
    ipBatch(
      [
        'link set lo up',
        `link add ${INTERNET_BRIDGE} type bridge`,
        `addr add ${topology.internet.gateway}/${inetLen} dev ${INTERNET_BRIDGE}`,
        ...(topology.internet.gatewayV6
          ? [`addr add ${topology.internet.gatewayV6}/64 dev ${INTERNET_BRIDGE} nodad`]
          : []),
        `link set ${INTERNET_BRIDGE} up`,
        ...inetPorts.flatMap((p) => [`link set ${p} master ${INTERNET_BRIDGE}`, `link set ${p} up`]),
      ],
      { netns: net.inetNetns },
    ),
    ipBatch(
      [
        'link set lo up',
        `addr add ${topology.apiServer.ip}/${inetLen} dev ${NODE_IFACE}`,
        `link set ${NODE_IFACE} up`,
        `route add default via ${topology.internet.gateway}`,
      ],
      { netns: net.apiNetns },
    ),
  ];
  for (const r of net.routers) {
    const ports = net.nodes.filter((n) => n.site === r.site).map(uplinkPort);
    const lanLen = r.lanCidr.split('/')[1];
    batches.push(
      ipBatch(
        [
          'link set lo up',
          `addr add ${r.wanIp}/${inetLen} dev ${ROUTER_WAN}`,
          `link set ${ROUTER_WAN} up`,
          `link add ${ROUTER_LAN} type bridge`,
          `addr add ${r.lanIp}/${lanLen} dev ${ROUTER_LAN}`,
          ...(r.lanIpV6 ? [`addr add ${r.lanIpV6}/64 dev ${ROUTER_LAN} nodad`] : []),
          `link set ${ROUTER_LAN} up`,
          ...ports.flatMap((p) => [`link set ${p} master ${ROUTER_LAN}`, `link set ${p} up`]),
          `route add default via ${topology.internet.gateway}`,
        ],
        { netns: r.netns },
      ),
    );
  }
  for (const n of net.nodes) {
    batches.push(
      ipBatch(
        [
          'link set lo up',
          `addr add ${n.ip}/${n.prefixLength} dev ${NODE_IFACE}`,
          // nodad: a tentative address is unusable for a second or two; nothing else uses it.
          ...(n.ipv6 ? [`addr add ${n.ipv6}/64 dev ${NODE_IFACE} nodad`] : []),
          `link set ${NODE_IFACE} up`,
          `route add default via ${n.gateway}`,
        ],
        { netns: n.netns },
      ),
    );
  }
  await Promise.all(batches);
  progress(`links: internet ${topology.internet.cidr}, ${net.routers.length} NAT routers, ${net.nodes.length} nodes`);

  // 4. Forwarding: routers route between LAN and WAN; nodes route for their pods.
  const forwarding = [...net.routers.map((r) => r.netns), ...net.nodes.map((n) => n.netns)].flatMap((ns) => [
    `netns exec ${ns} sysctl -qw net.ipv4.ip_forward=1`,
    ...(topology.dualStack ? [`netns exec ${ns} sysctl -qw net.ipv6.conf.all.forwarding=1`] : []),
  ]);
  if (forwarding.length > 0) await ipBatch(forwarding);

  // 5. NAT routers.
  await Promise.all(net.routers.map((r) => runIn(r.netns, 'iptables-restore', [], routerRules(r))));
  for (const r of net.routers) progress(`router ${r.site}: ${r.lanCidr} → ${r.wanIp} (${describeNat(r)})`);

  // 6. Delay/loss on uplinks, both directions.
  const impaired: Array<Promise<unknown>> = [];
  for (const r of net.routers) {
    if (r.netem)
      impaired.push(
        impairLink({ netns: r.netns, dev: ROUTER_WAN }, { netns: net.inetNetns, dev: routerPort(r) }, r.netem),
      );
  }
  for (const n of net.nodes) {
    if (n.netem && n.siteKind === 'public') {
      impaired.push(
        impairLink({ netns: n.netns, dev: NODE_IFACE }, { netns: net.inetNetns, dev: uplinkPort(n) }, n.netem),
      );
    }
  }
  await Promise.all(impaired);
}

/** One end of a link: an interface inside a namespace. */
export interface LinkEnd {
  netns: string;
  dev: string;
}

/**
 * Delay/loss on a link, both directions: tc netem on the egress of both ends. Kernels built
 * without netem (CONFIG_NET_SCH_NETEM unset, as on this project's CI machine) still get loss,
 * emulated with `iptables -m statistic` on the routed end (`routed`, both directions), and a
 * clear error for delay, which needs netem.
 */
export async function impairLink(routed: LinkEnd, other: LinkEnd, netem: Netem): Promise<void> {
  try {
    await run('tc', ['-n', routed.netns, 'qdisc', 'replace', 'dev', routed.dev, 'root', ...netemArgs(netem)]);
    await run('tc', ['-n', other.netns, 'qdisc', 'replace', 'dev', other.dev, 'root', ...netemArgs(netem)]);
    return;
  } catch (err) {
    if (!(err instanceof CommandError && /qdisc kind is unknown/.test(err.stderr))) throw err;
  }
  if (netem.delayMs > 0 || netem.jitterMs > 0) {
    throw new Error(
      `delay on ${routed.dev} (${routed.netns}): this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM, module sch_netem); ` +
        'loss alone (loss=N%) still works without it',
    );
  }
  if (netem.lossPct > 0) {
    const drop = ['-m', 'statistic', '--mode', 'random', '--probability', String(netem.lossPct / 100), '-j', 'DROP'];
    await runIn(routed.netns, 'iptables', ['-t', 'mangle', '-A', 'PREROUTING', '-i', routed.dev, ...drop]);
    await runIn(routed.netns, 'iptables', ['-t', 'mangle', '-A', 'POSTROUTING', '-o', routed.dev, ...drop]);
  }
}

/** Deletes every namespace of the network (killing what still runs inside). Never throws. */
export async function destroyNetwork(net: Pick<LabNetwork, 'namespaces'>): Promise<void> {
  // Nodes first, then routers and the internet: each namespace's processes die with it.
  await Promise.all([...net.namespaces].reverse().map((ns) => deleteNetns(ns)));
}

export function nodeNet(net: LabNetwork, name: string): NodeNetwork {
  const node = net.nodes.find((n) => n.name === name);
  if (!node) throw new Error(`no node ${name} in the lab (nodes: ${net.nodes.map((n) => n.name).join(', ')})`);
  return node;
}

export function routerNet(net: LabNetwork, site: string): RouterNetwork {
  const router = net.routers.find((r) => r.site === site);
  if (!router)
    throw new Error(`site ${site} has no NAT router (routers: ${net.routers.map((r) => r.site).join(', ')})`);
  return router;
}

/** Switches a router to another NAT kind (a clean conntrack table: old mappings would stay). */
export async function setNatKind(net: LabNetwork, site: string, nat: NatKind): Promise<void> {
  const router = routerNet(net, site);
  router.nat = nat;
  await runIn(router.netns, 'iptables-restore', [], routerRules(router));
  // Existing mappings would keep their ports: start from a clean conntrack table.
  await tryRun('ip', ['netns', 'exec', router.netns, 'conntrack', '-F']);
}

/** Switches a router between a port-preserving NAT and a symmetric one (--random-fully). */
export function setSymmetricNat(net: LabNetwork, site: string, symmetric: boolean): Promise<void> {
  return setNatKind(net, site, symmetric ? 'symmetric' : 'masquerade');
}

/**
 * Inserts an iptables rule at the top of a router's FORWARD chain (e.g. a DROP that cuts a
 * direct path) and returns a function that removes it again.
 */
export async function addRouterRule(net: LabNetwork, site: string, rule: string[]): Promise<() => Promise<void>> {
  const router = routerNet(net, site);
  await runIn(router.netns, 'iptables', ['-I', 'FORWARD', '1', ...rule]);
  return async () => {
    await runIn(router.netns, 'iptables', ['-D', 'FORWARD', ...rule]);
  };
}

/** A site as `lab status` shows it: public, or behind a router of some NAT kind. */
export interface SiteSummary {
  name: string;
  kind: 'public' | 'nat';
  /** NAT sites only. */
  nat?: NatKind;
  /** NAT sites only: the router's public address. */
  wanIp?: string;
  /** The site LAN (NAT sites) or the internet segment (public sites). */
  network: string;
  nodes: string[];
  /** One line on what the router does. */
  description: string;
}

/** Every site of the lab, in topology order, with its NAT kind. */
export function labSites(net: Pick<LabNetwork, 'topology'>): SiteSummary[] {
  const sites: SiteSummary[] = [];
  for (const node of net.topology.nodes) {
    if (sites.some((s) => s.name === node.site)) continue;
    const router = net.topology.routers.find((r) => r.site === node.site);
    const nodes = net.topology.nodes.filter((n) => n.site === node.site).map((n) => n.name);
    sites.push(
      router
        ? {
            name: node.site,
            kind: 'nat',
            nat: natKindOf(router),
            wanIp: router.wanIp,
            network: router.lanCidr,
            nodes,
            description: describeNat(router),
          }
        : {
            name: node.site,
            kind: 'public',
            network: net.topology.internet.cidr,
            nodes,
            description: 'public addresses, no NAT',
          },
    );
  }
  return sites;
}

/** Pings `target` from inside `netns`; resolves to the RTT in ms, or null when unreachable. */
export async function pingFrom(netns: string, target: string, timeoutSec = 2): Promise<number | null> {
  try {
    const out = await runIn(netns, 'ping', ['-n', '-c', '1', '-W', String(timeoutSec), target]);
    const m = /time[=<]([\d.]+) ?ms/.exec(out);
    return m ? Number(m[1]) : 0;
  } catch {
    return null;
  }
}
