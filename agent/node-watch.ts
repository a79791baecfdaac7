// Watches every Node (an informer: list, then watch, relist on 410) and feeds each peer to
// the overlay's directory and the forwarder's route table; route changes are signalled to
// the reconciler. A peer's annotated pod CIDRs reach the forwarder (and host-gw routes)
// only where the PodCidrAuthority backs them (its IPAMBlocks / spec.podCIDRs, inside the
// cluster CIDRs, overlapping no other node's); the rest is refused and reported. A Node without (valid) edgemesh annotations is ignored with its reason:
// its agent may just not have started yet. Every handler is guarded: whatever one Node
// carries, an exception in its handling is logged and counted, never fatal to the agent.
import type { Informer, ObjectCache, V1Node } from '@kubernetes/client-node';
import type { Logger } from '../common/log.ts';
import type { PeerDirectory, PeerInfo } from '../overlay/directory.ts';
import { InformerKeeper } from './informer-keeper.ts';
import type { NodeApi } from './kube.ts';
import type { PodCidrAuthority, RefusedCidr } from './pod-cidr-authority.ts';

/** What the watch needs from the forwarder (dataplane/forwarder.ts). */
export interface PeerRoutes {
  /** Returns the CIDRs it refused (overlapping another peer's). */
  setPeer(node: string, podCidrs: string[]): string[];
  removePeer(node: string): void;
}

export interface NodeWatchOptions {
  api: NodeApi;
  selfName: string;
  directory: PeerDirectory;
  forwarder: PeerRoutes;
  /** Which pod CIDRs the cluster assigns to each node (IPAMBlocks, spec.podCIDRs). */
  authority: PodCidrAuthority;
  /** A peer's refused pod CIDRs changed to a non-empty set (e.g. to raise a Warning Event). */
  onRefused?: (node: string, refused: RefusedCidr[]) => void;
  /**
   * How long a refusal must last before onRefused hears of it (default 15 s): a joining
   * node's IPAMBlock and its Node annotations reach the watches in either order, and the
   * moment between is not worth a Warning Event.
   */
  reportRefusalsAfterMs?: number;
  /** Something routing depends on changed (peer added, removed, moved site or address). */
  onChange: () => void;
  /** The own Node was added or changed (e.g. someone edited its annotations). */
  onSelf?: (node: V1Node) => void;
  logger: Logger;
}

export class NodeWatch {
  private readonly opts: NodeWatchOptions;
  private readonly log: Logger;
  private informer: (Informer<V1Node> & ObjectCache<V1Node>) | undefined;
  private stopped = false;
  private keeper: InformerKeeper | undefined;
  /** Informer errors seen (each is followed by a restart). */
  get errors(): number {
    return this.keeper?.errors ?? 0;
  }
  /** Exceptions caught in event handlers (a bug or input nobody foresaw; the event is skipped). */
  handlerErrors = 0;
  /** Each peer's pod CIDRs that passed verification and are routed. */
  private readonly verified = new Map<string, string[]>();
  /** Each peer's pod CIDRs that were refused, with why. */
  private readonly refused = new Map<string, RefusedCidr[]>();
  private reverifyPending: NodeJS.Immediate | undefined;
  /** Refusals waiting to be reported (see reportRefusalsAfterMs). */
  private readonly reportTimers = new Map<string, NodeJS.Timeout>();

  constructor(opts: NodeWatchOptions) {
    this.opts = opts;
    this.log = opts.logger;
    const { directory, forwarder, onChange } = opts;
    directory.on('peer:added', (p: PeerInfo) =>
      this.guarded('peer:added', p.node, () => {
        this.applyPeer(p);
        this.log.info({ peer: p.node, site: p.site, podCidrs: this.verifiedCidrs(p.node) }, 'peer added');
        onChange();
      }),
    );
    directory.on('peer:updated', (p: PeerInfo) =>
      this.guarded('peer:updated', p.node, () => {
        this.applyPeer(p);
        this.log.info({ peer: p.node, site: p.site, podCidrs: this.verifiedCidrs(p.node) }, 'peer changed');
        onChange();
      }),
    );
    directory.on('peer:removed', (p: PeerInfo) =>
      this.guarded('peer:removed', p.node, () => {
        forwarder.removePeer(p.node);
        this.verified.delete(p.node);
        this.refused.delete(p.node);
        clearTimeout(this.reportTimers.get(p.node));
        this.reportTimers.delete(p.node);
        this.log.info({ peer: p.node }, 'peer removed');
        // A CIDR the forwarder refused because this peer held it may be free now.
        this.scheduleReverify();
        onChange();
      }),
    );
    opts.authority.on('change', () => this.scheduleReverify());
    directory.on('peer:ignored', (node: string, reason: string) => this.log.warn({ node, reason }, 'node refused'));
  }

  /** Routes the CIDRs of `p` the cluster backs; records and reports the rest. Returns whether anything changed. */
  private applyPeer(p: PeerInfo): boolean {
    const verdict = this.opts.authority.verify(p.node, p.podCidrs);
    const fromForwarder = this.opts.forwarder.setPeer(p.node, verdict.accepted);
    const overlapping = new Set(fromForwarder);
    const verified = verdict.accepted.filter((c) => !overlapping.has(c));
    const refused = [
      ...verdict.refused,
      ...fromForwarder.map((cidr) => ({ cidr, reason: 'overlaps a pod CIDR the forwarder routes to another peer' })),
    ];
    const routesChanged = (this.verified.get(p.node) ?? []).join() !== verified.join();
    const refusedBefore = JSON.stringify(this.refused.get(p.node) ?? []);
    this.verified.set(p.node, verified);
    if (refused.length > 0) this.refused.set(p.node, refused);
    else this.refused.delete(p.node);
    if (refusedBefore !== JSON.stringify(refused)) {
      clearTimeout(this.reportTimers.get(p.node));
      this.reportTimers.delete(p.node);
      if (refused.length > 0) {
        this.log.warn({ peer: p.node, refused }, 'pod CIDRs refused: not backed by the cluster');
        const delay = this.opts.reportRefusalsAfterMs ?? 15_000;
        if (delay <= 0) this.report(p.node, refused);
        else {
          const timer = setTimeout(() => {
            this.reportTimers.delete(p.node);
            // Reported only if the very same refusal still stands.
            if (JSON.stringify(this.refused.get(p.node)) === JSON.stringify(refused)) this.report(p.node, refused);
          }, delay);
          timer.unref();
          this.reportTimers.set(p.node, timer);
        }
      }
    }
    return routesChanged;
  }

  private report(node: string, refused: RefusedCidr[]): void {
    try {
      this.opts.onRefused?.(node, refused);
    } catch (err) {
      this.log.warn({ peer: node, err: String(err) }, 'reporting refused pod CIDRs failed');
    }
  }

  /** Verifies every peer again once the current burst of events is over (IPAMBlocks arrive in bursts). */
  private scheduleReverify(): void {
    if (this.reverifyPending || this.stopped) return;
    this.reverifyPending = setImmediate(() => {
      this.reverifyPending = undefined;
      this.reverifyAll();
    });
  }

  /** Applies the authority's current view to every peer; signals a route change if any moved. */
  reverifyAll(): void {
    let changed = false;
    for (const p of this.opts.directory.list()) {
      this.guarded('reverify', p.node, () => {
        if (this.applyPeer(p)) changed = true;
      });
    }
    if (changed) this.opts.onChange();
  }

  /** The peer's pod CIDRs that passed verification (what the forwarder and host-gw routes use). */
  verifiedCidrs(node: string): string[] {
    return this.verified.get(node) ?? [];
  }

  /** Every peer with refused pod CIDRs, and why. */
  refusedCidrs(): Map<string, RefusedCidr[]> {
    return new Map(this.refused);
  }

  /** Runs one event's handling; an exception is logged and counted instead of ending the process. */
  private guarded(event: string, node: string | undefined, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.handlerErrors++;
      // A peer whose update could not be applied must not keep routes from before it; its
      // link stays (the overlay still holds it, and the next good update routes it again).
      if (node !== undefined && event !== 'peer:removed') {
        try {
          this.opts.forwarder.setPeer(node, []);
        } catch {
          try {
            this.opts.forwarder.removePeer(node); // the link goes too, routes first
          } catch {
            // already logged below; nothing more to undo
          }
        }
      }
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
    this.stopped = true;
    this.keeper?.stop();
    if (this.reverifyPending) clearImmediate(this.reverifyPending);
    for (const timer of this.reportTimers.values()) clearTimeout(timer);
    this.reportTimers.clear();
    await this.informer?.stop();
  }
}
