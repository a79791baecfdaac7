// The node's routes towards other nodes' pods, as one desired set reconciled against the
// kernel: cluster CIDRs → the TUN (src = this node's gateway address, so locally originated
// packets carry a pod-network source the peer accepts); each same-site peer's pod CIDRs →
// host-gw via its node IP. Reconciling (replace desired, delete stale) makes a restart or
// a Node deletion converge with no duplicate and no leftover.
import { type HostNet, iproute2HostNet, type RouteSpec } from '../common/host-net/index.ts';
import { canonicalCidr, cidrFamily, containsCidr } from '../ipam/cidr.ts';
import type { NodeBlock } from '../ipam/types.ts';

export interface HostGwPeer {
  node: string;
  /** The peer's addresses in the site, best first (its node IP, then its InternalIPs). */
  nextHops: string[];
  podCidrs: string[];
}

function familyOfAddress(ip: string): 4 | 6 {
  return ip.includes(':') ? 6 : 4;
}

function routeKey(r: RouteSpec): string {
  return `${r.dst} ${r.dev} ${r.via ?? ''} ${r.src ?? ''}`;
}

/** The routes through the TUN: one per cluster CIDR whose family has a local block. */
export function tunRoutes(clusterCidrs: string[], blocks: NodeBlock[], tun: string): RouteSpec[] {
  return clusterCidrs.flatMap((dst) => {
    const block = blocks.find((b) => b.family === cidrFamily(dst));
    return block ? [{ dst, dev: tun, src: block.gateway }] : [];
  });
}

/**
 * Host-gw routes for same-site peers: each pod CIDR via the peer's address of the same
 * family (dual-stack nodes report an InternalIP per family). `devFor` names the interface
 * that reaches a next hop directly (`ip route get`); a pod CIDR without such a next hop
 * gets no host-gw route. The peers' CIDRs must be verified ones (agent/pod-cidr-authority.ts);
 * even so, only CIDRs inside the cluster CIDRs become kernel routes: a peer's word never
 * reroutes the host's other traffic.
 */
export function hostGwRoutes(
  peers: HostGwPeer[],
  devFor: (nextHop: string) => string | undefined,
  clusterCidrs: string[],
): RouteSpec[] {
  const routes: RouteSpec[] = [];
  const inside = (dst: string) => clusterCidrs.some((c) => cidrFamily(c) === cidrFamily(dst) && containsCidr(c, dst));
  for (const p of peers) {
    for (const dst of p.podCidrs) {
      if (!inside(dst)) continue;
      const via = p.nextHops.find((ip) => familyOfAddress(ip) === cidrFamily(dst) && devFor(ip) !== undefined);
      if (via) routes.push({ dst, dev: devFor(via)!, via });
    }
  }
  return routes;
}

/** The host's routes in the agent's own namespace. */
const hostNet: HostNet = iproute2HostNet();

/** Every main-table route whose destination lies inside a cluster CIDR: the ones the agent manages. */
export async function listPodRoutes(clusterCidrs: string[], net: HostNet = hostNet): Promise<RouteSpec[]> {
  const found: RouteSpec[] = [];
  for (const r of await net.listTableRoutes({ table: 'main' })) {
    // Unreachable (fallback) routes are not pod routes: IPv4 lists them without a device, IPv6 on `lo`.
    if (!r.dev || r.type !== undefined || r.dst === 'default') continue;
    const dst = r.dst.includes('/') ? r.dst : `${r.dst}/${r.family === 4 ? 32 : 128}`;
    // Kernel routes of the local bridge (proto kernel) belong to the interface, not to us.
    if (r.protocol === 'kernel') continue;
    if (!clusterCidrs.some((c) => cidrFamily(c) === cidrFamily(dst) && containsCidr(c, dst))) continue;
    found.push({ dst: r.dst, dev: r.dev, ...(r.via ? { via: r.via } : {}), ...(r.src ? { src: r.src } : {}) });
  }
  return found;
}

/** One spelling per destination: the kernel omits /32 and /128 and may compress IPv6 differently. */
export function canonicalDst(dst: string): string {
  return canonicalCidr(dst.includes('/') ? dst : `${dst}/${dst.includes(':') ? 128 : 32}`);
}

/** Replaces every desired route and deletes managed routes that are no longer desired. */
export async function reconcileRoutes(
  desired: RouteSpec[],
  clusterCidrs: string[],
  net: HostNet = hostNet,
): Promise<{ replaced: number; removed: RouteSpec[] }> {
  const current = await listPodRoutes(clusterCidrs, net);
  const want = new Set(desired.map((r) => routeKey({ ...r, dst: canonicalDst(r.dst) })));
  // The kernel reports `dst` of a /32 without the length and no `src` for host-gw routes.
  const stale = current.filter((r) => !want.has(routeKey({ ...r, dst: canonicalDst(r.dst) })));
  // A stale route with the same destination is overwritten by `replace`; deleting it too
  // would remove the fresh one.
  const desiredDsts = new Set(desired.map((r) => canonicalDst(r.dst)));
  const remove = stale.filter((r) => !desiredDsts.has(canonicalDst(r.dst)));
  const have = new Set(current.map((r) => routeKey({ ...r, dst: canonicalDst(r.dst) })));
  const missing = desired.filter((r) => !have.has(routeKey({ ...r, dst: canonicalDst(r.dst) })));
  // Nothing to do is the common case of the periodic pass: no `ip -batch` at all.
  if (missing.length === 0 && remove.length === 0) return { replaced: 0, removed: [] };
  await net.applyRoutes({ replace: missing, remove });
  return { replaced: missing.length, removed: remove };
}

/** The interface through which the kernel reaches `ip` (for host-gw next hops). */
export async function deviceTowards(ip: string, net: HostNet = hostNet): Promise<string | undefined> {
  const route = await net.routeTowards(ip);
  // A next hop behind a router is not on our LAN: host-gw needs a direct neighbour.
  if (!route?.dev || route.via) return undefined;
  return route.dev;
}

/** Metric of the fallback routes: below every real route to the same destination. */
export const FALLBACK_METRIC = 4000;

/**
 * An `unreachable` route per cluster CIDR under the TUN route: while the agent restarts
 * (the TUN and its routes vanish with the process), pod traffic to other nodes fails fast
 * here instead of leaking out of the default route unencrypted.
 */
export async function ensureFallbackRoutes(clusterCidrs: string[], net: HostNet = hostNet): Promise<void> {
  for (const cidr of clusterCidrs) await net.ensureUnreachableRoute(cidr, FALLBACK_METRIC);
}

export async function removeFallbackRoutes(clusterCidrs: string[], net: HostNet = hostNet): Promise<string[]> {
  const removed: string[] = [];
  for (const cidr of clusterCidrs) {
    if (await net.removeUnreachableRoute(cidr, FALLBACK_METRIC)) {
      removed.push(`unreachable ${cidr} metric ${FALLBACK_METRIC}`);
    }
  }
  return removed;
}
