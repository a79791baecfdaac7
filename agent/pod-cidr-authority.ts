// Which pod CIDRs each node may claim, from what the cluster itself says rather than from
// the node's own annotations: the IPAMBlocks that name the node (ipam/node-blocks.ts) and
// the node's spec.podCIDRs (set by the control plane). A node's annotated CIDR counts only
// where it equals one of these, lies inside the cluster CIDRs and shares no address with
// any other node's block: a node speaks only for itself.
//
// Blocks are claims nodes make themselves, so a compromised node must not be able to use
// one against the others: a block counts only at the cluster's block size (all blocks
// then align and never overlap, and the name — the lock — keeps two from being equal),
// and where a block overlaps a node's spec.podCIDRs (the control plane's word), the
// spec.podCIDRs win and only the block is refused.
//
// Each change names the CIDRs whose assignment it touched: a verdict on a claimed CIDR
// depends only on the assignments that share an address with it, so whoever acts on
// verdicts (agent/peer-routes.ts) checks again only the claims overlapping those.
import { EventEmitter } from 'node:events';
import { isCanonicalCidr, parseCidr } from '../common/cidr.ts';
import { RouteTable } from '../dataplane/route-table.ts';
import { cidrFamily, containsCidr } from '../ipam/cidr.ts';
import { blockObjectName } from '../ipam/node-blocks.ts';
import type { RefusedCidr } from '../overlay/directory.ts';

// The peer table (overlay/directory.ts) keeps the refusals; one type for both.
export type { RefusedCidr };

export interface Verdict {
  accepted: string[];
  refused: RefusedCidr[];
}

/** The parts of an IPAMBlock object the authority reads (anything else may be garbage). */
export interface BlockLike {
  metadata?: { name?: string };
  spec?: { cidr?: unknown; node?: unknown };
}

/** The CIDR when it is one in canonical form, else undefined. */
function canonicalOrUndefined(text: unknown): string | undefined {
  return isCanonicalCidr(text) ? text : undefined;
}

/** What one change of the authority touched. */
export interface AuthorityChange {
  /**
   * Every CIDR assigned to some node, or no longer, or by another source (an IPAMBlock
   * added, removed or moved to another node; a Node's spec.podCIDRs before and after).
   * Only verdicts on claims overlapping one of these can differ from before.
   */
  cidrs: readonly string[];
}

export class PodCidrAuthority extends EventEmitter<{ change: [AuthorityChange] }> {
  /** IPAMBlock name → (canonical CIDR, node), for blocks whose name encodes their CIDR. */
  private readonly blocks = new Map<string, { cidr: string; node: string }>();
  /** Node → its spec.podCIDRs (canonical). */
  private readonly podCidrs = new Map<string, string[]>();
  /** Every authoritative CIDR → the nodes it is assigned to (usually one), each with how many sources say so. */
  private readonly holders = new RouteTable<Map<string, number>>();
  /** The same for spec.podCIDRs alone (they outrank blocks). */
  private readonly specHolders = new RouteTable<Map<string, number>>();
  /** The block size per family (blockPrefixV4/V6 of the config); other sizes are not blocks of this cluster. */
  private readonly blockPrefix: Record<4 | 6, number | undefined>;
  /** Node → its authoritative CIDRs, each with how many sources say so. */
  private readonly byNode = new Map<string, Map<string, number>>();
  private readonly clusterCidrs: string[];
  /** IPAMBlocks ignored because their name does not encode their CIDR, or they are malformed. */
  readonly badBlocks = new Map<string, string>();

  constructor(clusterCidrs: string[], blockPrefix: { v4?: number; v6?: number } = {}) {
    super();
    this.blockPrefix = { 4: blockPrefix.v4, 6: blockPrefix.v6 };
    this.clusterCidrs = clusterCidrs.map((c) => parseCidr(c).text);
  }

  /** Adds or updates an IPAMBlock. */
  setBlock(obj: BlockLike): void {
    const name = obj.metadata?.name;
    if (!name) return;
    const cidr = canonicalOrUndefined(obj.spec?.cidr);
    const node = obj.spec?.node;
    let why: string | undefined;
    if (cidr === undefined) why = `spec.cidr ${JSON.stringify(obj.spec?.cidr)} is not a canonical CIDR`;
    else if (typeof node !== 'string' || node === '') why = 'spec.node is not a node name';
    else if (blockObjectName(cidr) !== name) why = `its name does not encode spec.cidr ${cidr}`;
    else {
      const p = parseCidr(cidr);
      const size = this.blockPrefix[p.version];
      if (size !== undefined && p.prefixLength !== size) why = `${cidr} is not a /${size} block of this cluster`;
    }
    const before = this.blocks.get(name);
    if (why === undefined && before && before.cidr === cidr && before.node === node) return;
    if (before) {
      this.blocks.delete(name);
      this.hold(before.cidr, before.node, -1);
    }
    if (why !== undefined) {
      this.badBlocks.set(name, why);
      if (before) this.changed([before.cidr]);
      return;
    }
    this.badBlocks.delete(name);
    this.blocks.set(name, { cidr: cidr as string, node: node as string });
    this.hold(cidr as string, node as string, 1);
    this.changed(before ? [before.cidr, cidr as string] : [cidr as string]);
  }

  removeBlock(name: string): void {
    this.badBlocks.delete(name);
    const before = this.blocks.get(name);
    if (!before) return;
    this.blocks.delete(name);
    this.hold(before.cidr, before.node, -1);
    this.changed([before.cidr]);
  }

  /** A Node's spec.podCIDRs (an empty list forgets them). Non-canonical entries are not authoritative. */
  setNodePodCidrs(node: string, cidrs: readonly string[]): void {
    const canonical = cidrs.map(canonicalOrUndefined).filter((c): c is string => c !== undefined);
    const before = this.podCidrs.get(node) ?? [];
    if (before.join() === canonical.join()) return;
    for (const c of before) this.hold(c, node, -1, true);
    for (const c of canonical) this.hold(c, node, 1, true);
    if (canonical.length === 0) this.podCidrs.delete(node);
    else this.podCidrs.set(node, canonical);
    this.changed([...before, ...canonical]);
  }

  /** The CIDRs the cluster assigns to `node`. */
  assigned(node: string): string[] {
    return [...(this.byNode.get(node)?.keys() ?? [])];
  }

  /** Splits a node's claimed (canonical) CIDRs into those the cluster backs and those it does not, with why. */
  verify(node: string, claimed: readonly string[]): Verdict {
    const accepted: string[] = [];
    const refused: RefusedCidr[] = [];
    const own = new Set(this.assigned(node));
    for (const cidr of claimed) {
      if (!this.insideCluster(cidr)) {
        refused.push({ cidr, reason: 'outside the cluster CIDRs' });
        continue;
      }
      if (!own.has(cidr)) {
        refused.push({ cidr, reason: `no IPAMBlock or spec.podCIDRs assigns it to node ${node}` });
        continue;
      }
      // spec.podCIDRs yield only to other spec.podCIDRs; a block yields to anything.
      const fromSpec = this.podCidrs.get(node)?.includes(cidr) ?? false;
      const others = new Set<string>();
      for (const counts of (fromSpec ? this.specHolders : this.holders).overlapping(cidr)) {
        for (const n of counts.keys()) if (n !== node) others.add(n);
      }
      if (others.size > 0) {
        refused.push({ cidr, reason: `overlaps pod CIDRs assigned to ${[...others].sort().join(', ')}` });
        continue;
      }
      accepted.push(cidr);
    }
    return { accepted, refused };
  }

  private insideCluster(cidr: string): boolean {
    return this.clusterCidrs.some((c) => cidrFamily(c) === cidrFamily(cidr) && containsCidr(c, cidr));
  }

  /** Counts `node` as a holder of `cidr` once more (delta 1) or once less (delta -1). */
  private hold(cidr: string, node: string, delta: 1 | -1, fromSpec = false): void {
    count(this.holders, cidr, node, delta);
    if (fromSpec) count(this.specHolders, cidr, node, delta);
    const mine = this.byNode.get(node) ?? new Map<string, number>();
    const m = (mine.get(cidr) ?? 0) + delta;
    if (m > 0) mine.set(cidr, m);
    else mine.delete(cidr);
    if (mine.size > 0) this.byNode.set(node, mine);
    else this.byNode.delete(node);
  }

  private changed(cidrs: readonly string[]): void {
    this.emit('change', { cidrs: [...new Set(cidrs)] });
  }
}

/** Adds `delta` to how many sources assign `cidr` to `node` in `table`. */
function count(table: RouteTable<Map<string, number>>, cidr: string, node: string, delta: 1 | -1): void {
  let counts = table.get(cidr);
  if (!counts) {
    if (delta < 0) return;
    counts = new Map();
    table.insert(cidr, counts);
  }
  const n = (counts.get(node) ?? 0) + delta;
  if (n > 0) counts.set(node, n);
  else counts.delete(node);
  if (counts.size === 0) table.remove(cidr);
}
