// The peer directory: this node's one peer table. What it knows about every other cluster
// node lives here and nowhere else: the identity each Node publishes in its annotations
// (overlay/annotations.ts, parsed into a PeerInfo), and, for each trusted peer, its route
// state: the pod CIDRs actually routed to it and the claimed ones refused, with why (set by
// agent/peer-routes.ts, which checks the annotated CIDRs against the cluster). The overlay,
// the forwarder (through agent/forwarder-routes.ts) and the host routes follow its typed
// events; what they keep per peer (sessions, the LPM table) is derived from it, never a
// second record of who a peer is or what it routes, so nothing is wired in two phases. A
// Node whose annotations are missing or invalid is ignored with a reason (it may simply not
// have started its agent yet); it never throws out of upsertFromNode, because one bad Node
// must not stop the watch.
import { EventEmitter } from 'node:events';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import ipaddr from 'ipaddr.js';
import { CidrError, isIpAddress, parseCidr } from '../common/cidr.ts';
import { ipOf, isCircuit, isPublicIp } from './addresses.ts';
import { Annotations, Labels } from './annotations.ts';
import { parseRelayPort, RELAY_PORT_ANNOTATION, relayPortAnnotation } from './relay-annotations.ts';

export interface PeerInfo {
  node: string;
  peerId: string;
  multiaddrs: Multiaddr[];
  podCidrs: string[];
  site: string;
  nodeIp: string;
  punchPort?: number;
  relay: boolean;
  /** A relay node's UDP relay port (overlay/relay-annotations.ts); only kept for relays. */
  relayPort?: number;
  /** The multiaddrs whose IP is public (routable across sites): a direct dial target. */
  publicAddrs: Multiaddr[];
  /**
   * The InternalIPs its Node status reports (one per family on dual-stack nodes): host-gw
   * next hops besides nodeIp. Kept here so that a change is a peer:updated like any other.
   */
  internalIps: string[];
}

export interface NodeLike {
  name: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** status.addresses of type InternalIP; anything that is not an IP address is left out. */
  internalIps?: string[];
}

/** A claimed pod CIDR that is not routed, and why. */
export interface RefusedCidr {
  cidr: string;
  reason: string;
}

/** A trusted peer's route state (see setRoutes). */
interface RouteState {
  routes: string[];
  refused: RefusedCidr[];
}

export type UpsertResult =
  | { ok: true; peer: PeerInfo; change: 'added' | 'updated' | 'unchanged' }
  | { ok: false; reason: string };

export interface PeerDirectoryEvents {
  'peer:added': [PeerInfo];
  'peer:updated': [PeerInfo, PeerInfo];
  'peer:removed': [PeerInfo];
  'peer:ignored': [string, string];
  /**
   * The pod CIDRs routed to a trusted peer changed (setRoutes). Not emitted for a removed
   * peer: its routes go with it, and peer:removed says so.
   */
  'peer:routes': [node: string, routes: string[], previous: string[]];
}

export class PeerDirectory extends EventEmitter<PeerDirectoryEvents> {
  readonly #byNode = new Map<string, PeerInfo>();
  readonly #byPeerId = new Map<string, PeerInfo>();
  /** relays(), until the trusted entries change. */
  #relayList: PeerInfo[] | undefined;
  /** Every Node's valid annotations, trusted or not: a peer-ID conflict is decided over all of them. */
  readonly #claims = new Map<string, PeerInfo>();
  /** Why each ignored node was ignored (for status/logs). */
  readonly ignored = new Map<string, string>();
  /** Route state of trusted peers that have any (absent: nothing routed, nothing refused). */
  readonly #routes = new Map<string, RouteState>();

  /**
   * Takes one Node's annotations. Two Nodes publishing one peer ID are both refused (a
   * node cannot tell which of them holds the key, and the first-come winner would depend
   * on list order after a restart) until one of them stops; see conflicts().
   */
  upsertFromNode(node: NodeLike): UpsertResult {
    const parsed = parsePeerInfo(node);
    const before = this.#claims.get(node.name);
    if (!parsed.ok) {
      this.#claims.delete(node.name);
      this.ignored.set(node.name, parsed.reason);
      // A node that became invalid must not keep its old (possibly stale) entry.
      this.#untrust(node.name);
      this.emit('peer:ignored', node.name, parsed.reason);
      if (before) this.#settle(before.peerId);
      return parsed;
    }
    const peer = parsed.peer;
    this.#claims.set(node.name, peer);
    if (before && before.peerId !== peer.peerId) this.#settle(before.peerId);
    const result = this.#settle(peer.peerId, node.name);
    return result ?? { ok: false, reason: this.ignored.get(node.name) ?? 'refused' };
  }

  /** Forgets a Node (deleted): its entry, its claim and why it was refused. */
  remove(name: string): boolean {
    const claim = this.#claims.get(name);
    this.#claims.delete(name);
    this.ignored.delete(name);
    const removed = this.#untrust(name);
    if (claim) this.#settle(claim.peerId);
    return removed;
  }

  /** Every Node the directory holds something about: trusted, refused or in conflict. */
  knownNodes(): string[] {
    return [...new Set([...this.#byNode.keys(), ...this.#claims.keys(), ...this.ignored.keys()])];
  }

  /** Peer IDs published by more than one Node, and by which (none of them is trusted). */
  conflicts(): Map<string, string[]> {
    const byId = new Map<string, string[]>();
    for (const c of this.#claims.values()) byId.set(c.peerId, [...(byId.get(c.peerId) ?? []), c.node]);
    return new Map([...byId].filter(([, nodes]) => nodes.length > 1));
  }

  /** Trusts the one Node claiming `peerId`, or none when several do. Returns the result for `forNode`. */
  #settle(peerId: string, forNode?: string): UpsertResult | undefined {
    const claimants = [...this.#claims.values()].filter((c) => c.peerId === peerId);
    if (claimants.length > 1) {
      const names = claimants.map((c) => c.node).sort();
      const reason = `peer ID ${peerId} is published by nodes ${names.join(', ')}: trusting none of them`;
      for (const c of claimants) {
        this.#untrust(c.node);
        if (this.ignored.get(c.node) !== reason) {
          this.ignored.set(c.node, reason);
          this.emit('peer:ignored', c.node, reason);
        }
      }
      return forNode === undefined ? undefined : { ok: false, reason };
    }
    const peer = claimants[0];
    if (!peer) return undefined;
    this.ignored.delete(peer.node);
    const previous = this.#byNode.get(peer.node);
    if (previous !== undefined && samePeer(previous, peer)) {
      return peer.node === forNode ? { ok: true, peer: previous, change: 'unchanged' } : undefined;
    }
    if (previous !== undefined && this.#byPeerId.get(previous.peerId) === previous) {
      this.#byPeerId.delete(previous.peerId);
    }
    this.#byNode.set(peer.node, peer);
    this.#relayList = undefined;
    this.#byPeerId.set(peer.peerId, peer);
    if (previous === undefined) this.emit('peer:added', peer);
    else this.emit('peer:updated', peer, previous);
    return peer.node === forNode ? { ok: true, peer, change: previous === undefined ? 'added' : 'updated' } : undefined;
  }

  /** Drops a trusted entry (its routes go with it); returns whether there was one. */
  #untrust(name: string): boolean {
    const peer = this.#byNode.get(name);
    if (peer === undefined) return false;
    this.#byNode.delete(name);
    this.#relayList = undefined;
    this.#routes.delete(name);
    if (this.#byPeerId.get(peer.peerId) === peer) this.#byPeerId.delete(peer.peerId);
    this.emit('peer:removed', peer);
    return true;
  }

  /**
   * Records which of a trusted peer's pod CIDRs are routed and which are refused. Emits
   * peer:routes when the routes changed; a change in the refusals alone is only recorded
   * (status reads it, nothing is routed differently). Ignored for a node that is not a
   * trusted peer (its routes would outlive it). Returns whether the routes changed.
   */
  setRoutes(node: string, routes: readonly string[], refused: readonly RefusedCidr[]): boolean {
    if (!this.#byNode.has(node)) return false;
    const previous = this.#routes.get(node)?.routes ?? [];
    const next = [...routes];
    if (next.length === 0 && refused.length === 0) this.#routes.delete(node);
    else this.#routes.set(node, { routes: next, refused: refused.map((r) => ({ ...r })) });
    if (previous.join() === next.join()) return false;
    this.emit('peer:routes', node, [...next], [...previous]);
    return true;
  }

  /** The pod CIDRs routed to `node` (none for a node that is not a trusted peer). */
  routesOf(node: string): string[] {
    return [...(this.#routes.get(node)?.routes ?? [])];
  }

  /** The pod CIDRs `node` claims that are not routed, with why. */
  refusedOf(node: string): RefusedCidr[] {
    return (this.#routes.get(node)?.refused ?? []).map((r) => ({ ...r }));
  }

  /** Every trusted peer with refused pod CIDRs, and why. */
  refusals(): Map<string, RefusedCidr[]> {
    const out = new Map<string, RefusedCidr[]>();
    for (const [node, state] of this.#routes) if (state.refused.length > 0) out.set(node, this.refusedOf(node));
    return out;
  }

  get(name: string): PeerInfo | undefined {
    return this.#byNode.get(name);
  }

  byPeerId(peerId: string): PeerInfo | undefined {
    return this.#byPeerId.get(peerId);
  }

  has(peerId: string): boolean {
    return this.#byPeerId.has(peerId);
  }

  list(): PeerInfo[] {
    return [...this.#byNode.values()];
  }

  /**
   * The relay nodes (a copy: callers may sort it). Kept between changes of the trusted
   * entries: every path plan asks (the status and the metrics plan every peer), and walking
   * 5,000 entries for each of 5,000 peers made each scrape of an agent in such a cluster
   * allocate hundreds of MB (`node bench/agent-memory.ts`).
   */
  relays(): PeerInfo[] {
    this.#relayList ??= this.list().filter((p) => p.relay && p.publicAddrs.length > 0);
    return [...this.#relayList];
  }
}

function samePeer(a: PeerInfo, b: PeerInfo): boolean {
  return JSON.stringify(describe(a)) === JSON.stringify(describe(b));
}

function describe(p: PeerInfo): unknown {
  return { ...p, multiaddrs: p.multiaddrs.map(String), publicAddrs: p.publicAddrs.map(String) };
}

/** Parses one Node's annotations; pure, exported for tests. */
export function parsePeerInfo(node: NodeLike): { ok: true; peer: PeerInfo } | { ok: false; reason: string } {
  const ann = node.annotations ?? {};
  const labels = node.labels ?? {};
  const fail = (reason: string) => ({ ok: false as const, reason: `node ${node.name}: ${reason}` });

  const peerIdText = ann[Annotations.peerId];
  if (!peerIdText) return fail(`no ${Annotations.peerId} annotation (agent not started yet?)`);
  try {
    peerIdFromString(peerIdText);
  } catch {
    return fail(`${Annotations.peerId} "${peerIdText}" is not a libp2p peer ID`);
  }

  let rawAddrs: unknown;
  try {
    rawAddrs = JSON.parse(ann[Annotations.multiaddrs] ?? '[]');
  } catch {
    return fail(`${Annotations.multiaddrs} is not JSON`);
  }
  if (!Array.isArray(rawAddrs) || !rawAddrs.every((a) => typeof a === 'string')) {
    return fail(`${Annotations.multiaddrs} must be a JSON array of strings`);
  }
  const multiaddrs: Multiaddr[] = [];
  for (const text of rawAddrs as string[]) {
    try {
      multiaddrs.push(multiaddr(text));
    } catch {
      return fail(`${Annotations.multiaddrs} holds an invalid multiaddr "${text}"`);
    }
  }

  // Checked with the parser the forwarder and the route table use, and kept only in its
  // canonical form: ipaddr.js alone accepts "10.1/16", "0xa.0.0.0/8" or "167772161/8",
  // which the forwarder then refused by throwing inside the Node watch.
  const podCidrs: string[] = [];
  for (const text of (ann[Annotations.podCidrs] ?? '').split(',').map((c) => c.trim())) {
    if (!text) continue;
    let canonical: string;
    try {
      canonical = parseCidr(text).text;
    } catch (err) {
      const why = err instanceof CidrError ? err.message : String(err);
      return fail(`${Annotations.podCidrs} holds an invalid CIDR: ${why}`);
    }
    if (canonical !== text)
      return fail(`${Annotations.podCidrs} holds "${text}", which is not canonical (${canonical})`);
    podCidrs.push(canonical);
  }

  const site = ann[Annotations.site] ?? labels[Labels.site] ?? '';
  if (!site) return fail(`no site (${Annotations.site} annotation or label)`);

  const nodeIp = ann[Annotations.nodeIp] ?? '';
  if (!isIpAddress(nodeIp)) return fail(`${Annotations.nodeIp} "${nodeIp}" is not an IP address`);
  // A next hop for host-gw routes: never the node's own loopback, a link-local or a multicast address.
  const nodeIpRange = ipaddr.parse(nodeIp).range();
  if (['loopback', 'linkLocal', 'multicast', 'unspecified', 'broadcast'].includes(nodeIpRange)) {
    return fail(`${Annotations.nodeIp} "${nodeIp}" is a ${nodeIpRange} address, not a node address`);
  }

  let punchPort: number | undefined;
  const punchText = ann[Annotations.punchPort];
  if (punchText !== undefined && punchText !== '') {
    punchPort = Number(punchText);
    if (!Number.isInteger(punchPort) || punchPort < 1 || punchPort > 65535) {
      return fail(`${Annotations.punchPort} "${punchText}" is not a TCP port`);
    }
  }

  const relay = labels[Labels.relay] === 'true';
  const publicAddrs = multiaddrs.filter((ma) => {
    const ip = ipOf(ma);
    return ip !== undefined && isPublicIp(ip) && !isCircuit(ma);
  });
  if (relay && publicAddrs.length === 0) return fail('labelled as relay but publishes no public multiaddr');
  const relayPort = parseRelayPort(ann[RELAY_PORT_ANNOTATION]);
  if ('error' in relayPort) return fail(relayPort.error);

  return {
    ok: true,
    peer: {
      node: node.name,
      peerId: peerIdText,
      multiaddrs,
      podCidrs,
      site,
      nodeIp,
      ...(punchPort === undefined ? {} : { punchPort }),
      relay,
      // The relay role is the operator's label: a port published without it means nothing.
      ...(relay && relayPort.port !== undefined ? { relayPort: relayPort.port } : {}),
      publicAddrs,
      internalIps: (node.internalIps ?? []).filter((ip) => isIpAddress(ip)),
    },
  };
}

/** The annotations/labels a node publishes for itself (the inverse of parsePeerInfo). */
export function peerAnnotations(p: {
  peerId: string;
  multiaddrs: string[];
  podCidrs: string[];
  site: string;
  nodeIp: string;
  punchPort?: number;
  relayPort?: number;
}): Record<string, string> {
  return {
    [Annotations.peerId]: p.peerId,
    [Annotations.multiaddrs]: JSON.stringify(p.multiaddrs),
    [Annotations.podCidrs]: p.podCidrs.join(','),
    [Annotations.site]: p.site,
    [Annotations.nodeIp]: p.nodeIp,
    ...(p.punchPort === undefined ? {} : { [Annotations.punchPort]: String(p.punchPort) }),
    ...relayPortAnnotation(p.relayPort),
  };
}
