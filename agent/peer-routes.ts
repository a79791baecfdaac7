// Decides which of each peer's annotated pod CIDRs are routed, and writes the decision into
// the peer table (overlay/directory.ts setRoutes), where the forwarder, the host routes and
// the status read it. A CIDR is routed only where the PodCidrAuthority backs it (its
// IPAMBlocks / spec.podCIDRs, inside the cluster CIDRs, overlapping no other node's) and it
// shares no address with a CIDR already routed to another peer or with this node's own
// blocks: first come, first routed, so neither the last writer nor a longer prefix inside
// someone else's block takes traffic over. The rest is refused, recorded with why, and
// reported (onRefused) once the refusal has lasted a while.
//
// Every peer is verified again (once per burst) when a peer goes (a CIDR it held may be
// free now), when a peer gives up a route, and when the authority changes (an IPAMBlock
// arrived or went). Every handler is guarded: an exception is logged and counted, and the
// peer is left without routes, never the agent without its event loop.
import type { Logger } from '../common/log.ts';
import { RouteTable } from '../dataplane/route-table.ts';
import type { PeerDirectory, PeerInfo, RefusedCidr } from '../overlay/directory.ts';
import type { PodCidrAuthority } from './pod-cidr-authority.ts';

export interface PeerRouteVerifierOptions {
  directory: PeerDirectory;
  /** Which pod CIDRs the cluster assigns to each node (IPAMBlocks, spec.podCIDRs). */
  authority: PodCidrAuthority;
  /** This node's own pod CIDRs: no peer is routed anything that shares an address with them. */
  localCidrs: readonly string[];
  /** A peer's refused pod CIDRs changed to a non-empty set (e.g. to raise a Warning Event). */
  onRefused?: (node: string, refused: RefusedCidr[]) => void;
  /**
   * How long a refusal must last before onRefused hears of it (default 15 s): a joining
   * node's IPAMBlock and its Node annotations reach the watches in either order, and the
   * moment between is not worth a Warning Event.
   */
  reportRefusalsAfterMs?: number;
  logger: Logger;
}

export class PeerRouteVerifier {
  readonly #o: PeerRouteVerifierOptions;
  readonly #log: Logger;
  readonly #local = new RouteTable<true>();
  /** Every CIDR routed to a peer → who holds it (from the table's peer:routes events). */
  readonly #routed = new RouteTable<Set<string>>();
  /** What #routed holds per peer, to take it out again when the peer goes. */
  readonly #routedBy = new Map<string, string[]>();
  #reverifyPending: NodeJS.Immediate | undefined;
  /** Refusals waiting to be reported (see reportRefusalsAfterMs). */
  readonly #reportTimers = new Map<string, NodeJS.Timeout>();
  #stopped = false;
  readonly #unsubscribe: Array<() => void> = [];
  /** Exceptions caught in event handlers (a bug or input nobody foresaw; the peer is left unrouted). */
  handlerErrors = 0;

  constructor(opts: PeerRouteVerifierOptions) {
    this.#o = opts;
    this.#log = opts.logger;
    for (const c of opts.localCidrs) this.#local.insert(c, true);
    const { directory, authority } = opts;
    const onUpsert = (p: PeerInfo) => this.#guarded('verify', p, () => this.#apply(p));
    const onRemoved = (p: PeerInfo) =>
      this.#guarded('peer:removed', undefined, () => {
        this.#index(p.node, []);
        clearTimeout(this.#reportTimers.get(p.node));
        this.#reportTimers.delete(p.node);
        // A CIDR refused because this peer held it may be free now.
        this.#scheduleReverify();
      });
    const onRoutes = (node: string, routes: string[]) => this.#index(node, routes);
    const onAuthority = () => this.#scheduleReverify();
    directory.on('peer:routes', onRoutes);
    directory.on('peer:added', onUpsert);
    directory.on('peer:updated', onUpsert);
    directory.on('peer:removed', onRemoved);
    authority.on('change', onAuthority);
    this.#unsubscribe.push(
      () => directory.off('peer:routes', onRoutes),
      () => directory.off('peer:added', onUpsert),
      () => directory.off('peer:updated', onUpsert),
      () => directory.off('peer:removed', onRemoved),
      () => authority.off('change', onAuthority),
    );
  }

  /** Verifies every peer now (the scheduled pass after a burst of events). */
  reverifyAll(): void {
    for (const p of this.#o.directory.list()) this.#guarded('reverify', p, () => this.#apply(p));
  }

  /** Stops listening and reporting. */
  stop(): void {
    this.#stopped = true;
    for (const off of this.#unsubscribe.splice(0)) off();
    if (this.#reverifyPending) clearImmediate(this.#reverifyPending);
    this.#reverifyPending = undefined;
    for (const timer of this.#reportTimers.values()) clearTimeout(timer);
    this.#reportTimers.clear();
  }

  /** Routes the CIDRs of `p` the cluster backs and nobody else holds; records and reports the rest. */
  #apply(p: PeerInfo): void {
    const { directory, authority } = this.#o;
    const verdict = authority.verify(p.node, p.podCidrs);
    const routes: string[] = [];
    const refused = [...verdict.refused];
    for (const cidr of verdict.accepted) {
      const holders = new Set<string>();
      for (const nodes of this.#routed.overlapping(cidr)) for (const n of nodes) if (n !== p.node) holders.add(n);
      if (this.#local.overlapping(cidr).length > 0) holders.add('this node');
      if (holders.size > 0) {
        refused.push({ cidr, reason: `overlaps a pod CIDR routed to ${[...holders].sort().join(', ')}` });
      } else routes.push(cidr);
    }
    const previous = directory.routesOf(p.node);
    const refusedBefore = JSON.stringify(directory.refusedOf(p.node));
    if (directory.setRoutes(p.node, routes, refused)) {
      this.#log.info({ peer: p.node, site: p.site, podCidrs: routes, previous }, 'peer routes changed');
      // A CIDR this peer gave up may be what another one was refused for.
      if (previous.some((c) => !routes.includes(c))) this.#scheduleReverify();
    }
    if (refusedBefore !== JSON.stringify(refused)) this.#refusalChanged(p.node, refused);
  }

  #refusalChanged(node: string, refused: RefusedCidr[]): void {
    clearTimeout(this.#reportTimers.get(node));
    this.#reportTimers.delete(node);
    if (refused.length === 0) return;
    this.#log.warn({ peer: node, refused }, 'pod CIDRs refused: not backed by the cluster');
    const delay = this.#o.reportRefusalsAfterMs ?? 15_000;
    if (delay <= 0) {
      this.#report(node, refused);
      return;
    }
    const timer = setTimeout(() => {
      this.#reportTimers.delete(node);
      // Reported only if the very same refusal still stands.
      if (JSON.stringify(this.#o.directory.refusedOf(node)) === JSON.stringify(refused)) this.#report(node, refused);
    }, delay);
    timer.unref();
    this.#reportTimers.set(node, timer);
  }

  #report(node: string, refused: RefusedCidr[]): void {
    try {
      this.#o.onRefused?.(node, refused);
    } catch (err) {
      this.#log.warn({ peer: node, err: String(err) }, 'reporting refused pod CIDRs failed');
    }
  }

  /** Keeps #routed equal to what the table routes to `node`. */
  #index(node: string, routes: readonly string[]): void {
    for (const cidr of this.#routedBy.get(node) ?? []) {
      const nodes = this.#routed.get(cidr);
      nodes?.delete(node);
      if (nodes?.size === 0) this.#routed.remove(cidr);
    }
    for (const cidr of routes) {
      const nodes = this.#routed.get(cidr);
      if (nodes) nodes.add(node);
      else this.#routed.insert(cidr, new Set([node]));
    }
    if (routes.length > 0) this.#routedBy.set(node, [...routes]);
    else this.#routedBy.delete(node);
  }

  /** Verifies every peer again once the current burst of events is over (IPAMBlocks arrive in bursts). */
  #scheduleReverify(): void {
    if (this.#reverifyPending || this.#stopped) return;
    this.#reverifyPending = setImmediate(() => {
      this.#reverifyPending = undefined;
      this.reverifyAll();
    });
  }

  /** Runs one event's handling; an exception is logged and counted instead of ending the process. */
  #guarded(event: string, peer: PeerInfo | undefined, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.handlerErrors++;
      const message = err instanceof Error ? err.message : String(err);
      this.#log.error({ event, node: peer?.node, err: message }, 'peer route handler failed');
      if (peer === undefined) return;
      // A peer whose CIDRs could not be verified must not keep routes from before; what it
      // gave up may be what another peer was refused for (only once: unchanged, no pass).
      try {
        const refused = peer.podCidrs.map((cidr) => ({ cidr, reason: 'verifying it failed (see the agent log)' }));
        if (this.#o.directory.setRoutes(peer.node, [], refused)) this.#scheduleReverify();
      } catch {
        // a subscriber failed too; already logged above, nothing more to undo
      }
    }
  }
}
