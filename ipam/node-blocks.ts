// Cluster-unique pod CIDRs for this node, one per configured IP family, coordinated only
// through the Kubernetes API (docs/architecture.md, "The control plane"):
//   1. node.spec.podCIDRs set by the control plane → use it (refuse one outside the cluster
//      CIDR, with a Node condition and an Event an operator sees in `kubectl describe node`);
//   2. else reuse the IPAMBlock this node already owns (agent restart);
//   3. else claim one by CREATING an IPAMBlock whose name encodes the CIDR: the API server's
//      name uniqueness is the lock, 409 AlreadyExists = taken → try the next candidate.
// Candidates start at a hash of the node name, so 50 nodes booting together do not all race
// for block 0. Blocks overlapping another node's podCIDRs or block are skipped, and any
// overlap found afterwards is reported (log + Event + condition message).
import { createHash } from 'node:crypto';
import type { KubeConfig, V1Node } from '@kubernetes/client-node';
import { KubeClient, LIST_PAGE, MergePatch, StrategicMergePatch } from '../common/kube/client.ts';
import { type Logger, silentLogger } from '../common/log.ts';
import {
  blockCount,
  type Cidr,
  canonicalCidr,
  containsCidr,
  defaultBlockPrefix,
  formatCidr,
  gateway,
  nthBlock,
  overlaps,
  parseCidr,
} from './cidr.ts';
import { IpamError } from './errors.ts';
import type { IpFamily, NodeBlock } from './types.ts';

export const IPAM_GROUP = 'edgemesh.io';
export const IPAM_VERSION = 'v1alpha1';
export const IPAM_PLURAL = 'ipamblocks';
export const IPAM_KIND = 'IPAMBlock';
/** Node condition type written by claimNodeBlocks. */
export const IPAM_CONDITION = 'EdgemeshIPAMReady';

export interface IpamBlockObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    uid?: string;
    ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid: string }>;
  };
  spec: { cidr: string; node: string; family: IpFamily };
}

export interface ClaimNodeBlocksOptions {
  kubeconfig: KubeConfig;
  nodeName: string;
  /** One CIDR per family, e.g. ["10.244.0.0/16", "fd00:10:244::/64"]. */
  clusterCidrs: string[];
  /** Node block prefix for IPv4 (default /24) and IPv6 (default /80). */
  blockPrefixV4?: number;
  blockPrefixV6?: number;
  logger?: Logger;
}

/** "10.244.3.0/24" → "v4-10-244-3-0-24"; "fd00:10::/80" → "v6-fd00-10---80" (a valid object name). */
export function blockObjectName(cidr: string): string {
  const c = parseCidr(cidr);
  return `v${c.family}-${formatCidr(c).replaceAll(/[.:/]/g, '-')}`;
}

function apiCode(e: unknown): number | undefined {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

function describeApiError(e: unknown): string {
  const body = (e as { body?: unknown })?.body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {
      // not JSON: fall through
    }
  }
  return e instanceof Error ? e.message : String(e);
}

/** Parses the cluster CIDRs: at most one per family. */
export function parseClusterCidrs(clusterCidrs: string[]): Map<IpFamily, Cidr> {
  if (clusterCidrs.length === 0) throw new IpamError('NoClusterCidr', 'no cluster CIDR configured');
  const byFamily = new Map<IpFamily, Cidr>();
  for (const text of clusterCidrs) {
    const c = parseCidr(text);
    if (byFamily.has(c.family)) {
      throw new IpamError(
        'InvalidClusterCidr',
        `two IPv${c.family} cluster CIDRs configured (${clusterCidrs.join(', ')})`,
      );
    }
    byFamily.set(c.family, c);
  }
  return byFamily;
}

function toNodeBlock(c: Cidr): NodeBlock {
  return { family: c.family, cidr: formatCidr(c), gateway: gateway(c) };
}

/** A 64-bit hash of the node name: the first candidate index, spread evenly across nodes. */
export function firstCandidateIndex(nodeName: string, count: bigint): bigint {
  return createHash('sha256').update(nodeName).digest().readBigUInt64BE(0) % count;
}

/** CIDRs another party holds: other nodes' podCIDRs and every IPAMBlock not owned by this node. */
interface Taken {
  exact: Set<string>;
  all: Array<{ cidr: Cidr; holder: string }>;
}

function collectTaken(nodeName: string, nodes: V1Node[], blocks: IpamBlockObject[]): Taken {
  const taken: Taken = { exact: new Set(), all: [] };
  const add = (text: string, holder: string) => {
    try {
      const c = parseCidr(text);
      taken.exact.add(formatCidr(c));
      taken.all.push({ cidr: c, holder });
    } catch {
      // A malformed CIDR in someone else's object cannot collide with a valid one.
    }
  };
  for (const n of nodes) {
    if (n.metadata?.name === nodeName) continue;
    for (const p of n.spec?.podCIDRs ?? (n.spec?.podCIDR ? [n.spec.podCIDR] : []))
      add(p, `node ${n.metadata?.name} podCIDR`);
  }
  for (const b of blocks)
    if (b.spec?.node !== nodeName) add(b.spec?.cidr ?? '', `IPAMBlock ${b.metadata.name} (node ${b.spec?.node})`);
  return taken;
}

/** Who else holds an address of `cidr`: for reporting overlapping claims. */
export function findOverlaps(cidr: string, taken: Taken): string[] {
  const c = parseCidr(cidr);
  return taken.all.filter((t) => overlaps(t.cidr, c)).map((t) => `${formatCidr(t.cidr)} (${t.holder})`);
}

/** The IPAMBlock collection's API path, or one block's. */
function blocksPath(name?: string): string {
  const base = `/apis/${IPAM_GROUP}/${IPAM_VERSION}/${IPAM_PLURAL}`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
}

class NodeBlockClaimer {
  private readonly client: KubeClient;
  private readonly log: Logger;
  private readonly opts: ClaimNodeBlocksOptions;

  constructor(opts: ClaimNodeBlocksOptions) {
    this.opts = opts;
    this.client = new KubeClient(opts.kubeconfig);
    this.log = opts.logger ?? silentLogger();
  }

  async run(): Promise<NodeBlock[]> {
    const { nodeName } = this.opts;
    const cluster = parseClusterCidrs(this.opts.clusterCidrs);
    const prefixes = new Map<IpFamily, number>();
    for (const [family, c] of cluster) {
      const prefix = (family === 4 ? this.opts.blockPrefixV4 : this.opts.blockPrefixV6) ?? defaultBlockPrefix(family);
      blockCount(c, prefix); // throws a clear IpamError when the block size does not fit
      prefixes.set(family, prefix);
    }
    const node = await this.readNode();
    const [nodes, blocks] = await Promise.all([this.listNodes(), this.listBlocks()]);
    const taken = collectTaken(nodeName, nodes, blocks);

    // 1. The control plane's assignment.
    const podCidrs = node.spec?.podCIDRs ?? (node.spec?.podCIDR ? [node.spec.podCIDR] : []);
    const fromControlPlane = new Map<IpFamily, Cidr>();
    for (const text of podCidrs) {
      let c: Cidr;
      try {
        c = parseCidr(text);
      } catch {
        return this.refuse('InvalidPodCIDR', `node ${nodeName} has an invalid spec.podCIDRs entry "${text}"`);
      }
      const clusterCidr = cluster.get(c.family);
      if (!clusterCidr) continue; // a family this cluster does not route: not ours to use
      if (!containsCidr(clusterCidr, c)) {
        await this.refuse(
          'PodCIDROutsideClusterCIDR',
          `node ${nodeName} has spec.podCIDRs ${formatCidr(c)}, outside the cluster CIDR ${formatCidr(clusterCidr)}: ` +
            'pods there would be unreachable; fix the controller-manager --cluster-cidr or edgemesh clusterCidrs',
        );
      }
      fromControlPlane.set(c.family, c);
    }

    const result: NodeBlock[] = [];
    const reports: string[] = [];
    for (const family of [...cluster.keys()].sort()) {
      const clusterCidr = cluster.get(family) as Cidr;
      const prefix = prefixes.get(family) as number;
      let block = fromControlPlane.get(family);
      let source = 'node.spec.podCIDRs';
      if (!block) {
        const owned = await this.ownedBlock(node, blocks, clusterCidr);
        block = owned ?? (await this.claim(node, clusterCidr, prefix, taken));
        source = owned ? 'owned IPAMBlock' : 'new IPAMBlock';
      }
      const cidr = formatCidr(block);
      const overlapsWith = findOverlaps(cidr, taken);
      if (overlapsWith.length > 0) {
        const msg = `pod CIDR ${cidr} of node ${nodeName} overlaps ${overlapsWith.join(', ')}`;
        reports.push(msg);
        this.log.error({ cidr, overlapsWith }, 'overlapping pod CIDR claims');
        await this.event('Warning', 'OverlappingPodCIDR', msg);
      }
      this.log.info({ cidr, source }, 'node block');
      result.push(toNodeBlock(block));
    }
    await this.setCondition(
      'True',
      reports.length > 0 ? 'OverlappingPodCIDR' : 'BlocksAssigned',
      reports.length > 0 ? reports.join('; ') : `pod CIDRs ${result.map((b) => b.cidr).join(', ')}`,
    );
    return result;
  }

  private async readNode(): Promise<V1Node> {
    try {
      return await this.client.request<V1Node>('GET', `/api/v1/nodes/${encodeURIComponent(this.opts.nodeName)}`);
    } catch (e) {
      if (apiCode(e) === 404) {
        throw new IpamError(
          'NodeNotFound',
          `node ${this.opts.nodeName} does not exist in the API (is nodeName right?)`,
        );
      }
      throw new IpamError('ApiError', `reading node ${this.opts.nodeName}: ${describeApiError(e)}`, { cause: e });
    }
  }

  /** Every Node's name and pod CIDRs (all collectTaken reads), listed in pages. */
  private async listNodes(): Promise<V1Node[]> {
    const nodes: V1Node[] = [];
    let next: string | undefined;
    do {
      const page = await this.client.request<{ metadata?: { continue?: string }; items: V1Node[] }>(
        'GET',
        '/api/v1/nodes',
        { query: { limit: LIST_PAGE, continue: next } },
      );
      for (const n of page.items) nodes.push({ metadata: { name: n.metadata?.name }, spec: n.spec });
      next = page.metadata?.continue || undefined;
    } while (next);
    return nodes;
  }

  private async listBlocks(): Promise<IpamBlockObject[]> {
    try {
      const list = await this.client.request<{ items?: IpamBlockObject[] }>('GET', blocksPath());
      return list.items ?? [];
    } catch (e) {
      if (apiCode(e) === 404) {
        throw new IpamError(
          'CrdMissing',
          'the IPAMBlock CRD (ipamblocks.edgemesh.io) is not installed: kubectl apply -f deploy/crds/ipamblock.yaml',
        );
      }
      throw new IpamError('ApiError', `listing IPAMBlocks: ${describeApiError(e)}`, { cause: e });
    }
  }

  /** The block of this family this node already owns inside the cluster CIDR (restart). */
  private async ownedBlock(node: V1Node, blocks: IpamBlockObject[], clusterCidr: Cidr): Promise<Cidr | undefined> {
    const mine = blocks
      .filter((b) => b.spec?.node === this.opts.nodeName)
      .flatMap((b) => {
        try {
          const c = parseCidr(b.spec.cidr);
          return c.family === clusterCidr.family ? [{ obj: b, cidr: c }] : [];
        } catch {
          return [];
        }
      });
    const inside = mine.filter((m) => containsCidr(clusterCidr, m.cidr));
    for (const m of mine.filter((x) => !inside.includes(x))) {
      this.log.warn({ block: m.obj.metadata.name }, 'owned IPAMBlock outside the configured cluster CIDR: not used');
    }
    const chosen = inside[0];
    if (!chosen) return undefined;
    if (inside.length > 1) {
      this.log.warn({ blocks: inside.map((m) => m.obj.metadata.name) }, 'node owns several IPAMBlocks of one family');
    }
    // A Node deleted and re-created under the same name has a new uid: re-point the owner so
    // the garbage collector does not take the block from the living node.
    const uid = node.metadata?.uid;
    if (uid && !chosen.obj.metadata.ownerReferences?.some((r) => r.uid === uid)) {
      await this.client
        .request('PATCH', blocksPath(chosen.obj.metadata.name), {
          body: { metadata: { ownerReferences: [this.ownerReference(node)] } },
          contentType: MergePatch,
        })
        .catch((e: unknown) => this.log.warn({ err: describeApiError(e) }, 'could not update IPAMBlock owner'));
    }
    return chosen.cidr;
  }

  private ownerReference(node: V1Node) {
    return {
      apiVersion: 'v1',
      kind: 'Node',
      name: this.opts.nodeName,
      uid: node.metadata?.uid as string,
      blockOwnerDeletion: true,
    };
  }

  /** Walks candidates from the node's hash; the first CREATE that succeeds is ours. */
  private async claim(node: V1Node, clusterCidr: Cidr, prefix: number, taken: Taken): Promise<Cidr> {
    const count = blockCount(clusterCidr, prefix);
    const start = firstCandidateIndex(this.opts.nodeName, count);
    const coarse = taken.all.filter((t) => t.cidr.family === clusterCidr.family && t.cidr.prefix !== prefix);
    let conflicts = 0;
    for (let i = 0n; i < count; i++) {
      const candidate = nthBlock(clusterCidr, prefix, (start + i) % count);
      const cidr = formatCidr(candidate);
      if (taken.exact.has(cidr) || coarse.some((t) => overlaps(t.cidr, candidate))) continue;
      const name = blockObjectName(cidr);
      const body: IpamBlockObject = {
        apiVersion: `${IPAM_GROUP}/${IPAM_VERSION}`,
        kind: IPAM_KIND,
        metadata: { name, ownerReferences: [this.ownerReference(node)] },
        spec: { cidr, node: this.opts.nodeName, family: candidate.family },
      };
      try {
        await this.client.request('POST', blocksPath(), { body });
        this.log.info({ cidr, name, conflicts }, 'claimed node block');
        return candidate;
      } catch (e) {
        if (apiCode(e) !== 409) {
          throw new IpamError('ApiError', `creating IPAMBlock ${name}: ${describeApiError(e)}`, { cause: e });
        }
        conflicts++;
        // Taken — unless by us: a retry after a create whose reply was lost finds its own block.
        const existing = await this.getBlock(name);
        if (existing?.spec.node === this.opts.nodeName) return candidate;
      }
    }
    throw new IpamError(
      'ClusterCidrExhausted',
      `no free /${prefix} block left in cluster CIDR ${formatCidr(clusterCidr)} (${count} blocks, all taken)`,
    );
  }

  private async getBlock(name: string): Promise<IpamBlockObject | undefined> {
    try {
      return await this.client.request<IpamBlockObject>('GET', blocksPath(name));
    } catch {
      return undefined;
    }
  }

  /** Marks the node not ready for IPAM (condition + event) and throws the IpamError. */
  private async refuse(reason: string, message: string): Promise<never> {
    this.log.error({ reason }, message);
    await this.setCondition('False', reason, message);
    await this.event('Warning', reason, message);
    throw new IpamError(reason, message);
  }

  private async setCondition(status: 'True' | 'False', reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    const condition = {
      type: IPAM_CONDITION,
      status,
      reason,
      message,
      lastHeartbeatTime: now,
      lastTransitionTime: now,
    };
    try {
      await this.client.request('PATCH', `/api/v1/nodes/${encodeURIComponent(this.opts.nodeName)}/status`, {
        body: { status: { conditions: [condition] } },
        contentType: StrategicMergePatch,
      });
    } catch (e) {
      // Reporting must not mask the real outcome (e.g. RBAC without nodes/status).
      this.log.warn({ err: describeApiError(e) }, `could not set node condition ${IPAM_CONDITION}`);
    }
  }

  private async event(type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    try {
      await this.client.request('POST', '/api/v1/namespaces/default/events', {
        body: {
          metadata: { generateName: `${this.opts.nodeName}.edgemesh-ipam.` },
          involvedObject: { kind: 'Node', apiVersion: 'v1', name: this.opts.nodeName },
          type,
          reason,
          message,
          source: { component: 'edgemesh-ipam', host: this.opts.nodeName },
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (e) {
      this.log.warn({ err: describeApiError(e) }, 'could not create event');
    }
  }
}

/**
 * This node's pod CIDRs, one per configured family (IPv4 first): from node.spec.podCIDRs,
 * else an IPAMBlock this node owns, else a newly claimed one. Throws IpamError with a clear
 * message (and sets the Node condition EdgemeshIPAMReady=False) when it cannot.
 */
export function claimNodeBlocks(opts: ClaimNodeBlocksOptions): Promise<NodeBlock[]> {
  return new NodeBlockClaimer(opts).run();
}

/** Deletes every IPAMBlock this node owns (uninstall); returns the freed CIDRs. */
export async function releaseNodeBlocks(opts: {
  kubeconfig: KubeConfig;
  nodeName: string;
  logger?: Logger;
}): Promise<string[]> {
  const client = new KubeClient(opts.kubeconfig);
  const log = opts.logger ?? silentLogger();
  const list = await client.request<{ items?: IpamBlockObject[] }>('GET', blocksPath());
  const freed: string[] = [];
  for (const b of list.items ?? []) {
    if (b.spec?.node !== opts.nodeName) continue;
    try {
      await client.request('DELETE', blocksPath(b.metadata.name));
    } catch (e) {
      if (apiCode(e) !== 404)
        throw new IpamError('ApiError', `deleting IPAMBlock ${b.metadata.name}: ${describeApiError(e)}`);
    }
    freed.push(canonicalCidr(b.spec.cidr));
    log.info({ cidr: b.spec.cidr }, 'released node block');
  }
  return freed;
}
