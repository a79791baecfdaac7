// Watches every Node (an informer: list, then watch, relist on 410) and feeds it to the
// peer table (overlay/directory.ts, from its annotations) and to the PodCidrAuthority (its
// spec.podCIDRs); the own Node goes to onSelf. Everything downstream — which pod CIDRs are
// routed (agent/peer-routes.ts), the forwarder (agent/forwarder-routes.ts), the overlay and
// the host routes — follows the table's events, not this watch. A Node without (valid)
// edgemesh annotations is ignored with its reason: its agent may just not have started
// yet. Every handler is guarded: whatever one Node carries, an exception in its handling
// is logged and counted, never fatal to the agent.
import type { Informer, ObjectCache, V1Node } from '@kubernetes/client-node';
import type { Logger } from '../common/log.ts';
import type { PeerDirectory, PeerInfo } from '../overlay/directory.ts';
import { InformerKeeper } from './informer-keeper.ts';
import type { NodeApi } from './kube.ts';
import type { PodCidrAuthority } from './pod-cidr-authority.ts';

export interface NodeWatchOptions {
  api: NodeApi;
  selfName: string;
  directory: PeerDirectory;
  /** Which pod CIDRs the cluster assigns to each node: every Node's spec.podCIDRs go here. */
  authority: PodCidrAuthority;
  /** The own Node was added or changed (e.g. someone edited its annotations). */
  onSelf?: (node: V1Node) => void;
  logger: Logger;
}

export class NodeWatch {
  private readonly opts: NodeWatchOptions;
  private readonly log: Logger;
  private informer: (Informer<V1Node> & ObjectCache<V1Node>) | undefined;
  private keeper: InformerKeeper | undefined;
  /** Informer errors seen (each is followed by a restart). */
  get errors(): number {
    return this.keeper?.errors ?? 0;
  }
  /** Exceptions caught in event handlers (a bug or input nobody foresaw; the event is skipped). */
  handlerErrors = 0;

  constructor(opts: NodeWatchOptions) {
    this.opts = opts;
    this.log = opts.logger;
    const { directory } = opts;
    directory.on('peer:added', (p: PeerInfo) => this.log.info({ peer: p.node, site: p.site }, 'peer added'));
    directory.on('peer:updated', (p: PeerInfo) => this.log.info({ peer: p.node, site: p.site }, 'peer changed'));
    directory.on('peer:removed', (p: PeerInfo) => this.log.info({ peer: p.node }, 'peer removed'));
    directory.on('peer:ignored', (node: string, reason: string) => this.log.warn({ node, reason }, 'node refused'));
  }

  /** Runs one event's handling; an exception is logged and counted instead of ending the process. */
  private guarded(event: string, node: string | undefined, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.handlerErrors++;
      this.log.error(
        { event, node, err: err instanceof Error ? err.message : String(err) },
        'Node event handler failed',
      );
    }
  }

  /** Applies one Node object (add or update). Exposed for tests. */
  upsert(node: V1Node): void {
    const name = node.metadata?.name;
    // Every Node's spec.podCIDRs (this one's too) is authoritative: nobody else may claim them.
    if (name)
      this.opts.authority.setNodePodCidrs(name, node.spec?.podCIDRs ?? (node.spec?.podCIDR ? [node.spec.podCIDR] : []));
    if (name === this.opts.selfName) this.opts.onSelf?.(node);
    if (!name || name === this.opts.selfName) return;
    this.opts.directory.upsertFromNode({
      name,
      labels: node.metadata?.labels ?? {},
      annotations: node.metadata?.annotations ?? {},
      // A new InternalIP changes host-gw next hops: the directory reports it as peer:updated.
      internalIps: (node.status?.addresses ?? []).filter((a) => a.type === 'InternalIP').map((a) => a.address),
    });
  }

  remove(node: V1Node): void {
    const name = node.metadata?.name;
    if (name) this.opts.authority.setNodePodCidrs(name, []);
    if (!name || name === this.opts.selfName) return;
    this.opts.directory.remove(name);
  }

  /** Resolves after the initial list has been applied. */
  async start(): Promise<void> {
    const informer = this.opts.api.nodeInformer();
    this.informer = informer;
    informer.on('add', (n) => this.guarded('add', n.metadata?.name, () => this.upsert(n)));
    informer.on('update', (n) => this.guarded('update', n.metadata?.name, () => this.upsert(n)));
    informer.on('delete', (n) => this.guarded('delete', undefined, () => this.remove(n)));
    // client-node's informer stops on error; restarting it relists and resyncs the cache.
    this.keeper = new InformerKeeper(informer, { log: this.log, what: 'Node' });
    await informer.start();
    // The initial list also drops peers that vanished while the agent was down.
    const present = new Set(informer.list().map((n) => n.metadata?.name));
    // Refused ones too: a vanished Node must not keep a conflict or a refusal alive.
    for (const name of this.opts.directory.knownNodes()) if (!present.has(name)) this.opts.directory.remove(name);
  }

  async stop(): Promise<void> {
    this.keeper?.stop();
    await this.informer?.stop();
  }
}
