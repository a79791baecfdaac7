// Decides which of each peer's annotated pod CIDRs are routed, and writes the decision into
// the peer table (overlay/directory.ts setRoutes), where the forwarder, the host routes and
// the status read it. A CIDR is routed only where the PodCidrAuthority backs it (its
// IPAMBlocks / spec.podCIDRs, inside the cluster CIDRs, overlapping no other node's) and it
// shares no address with a CIDR already routed to another peer or with this node's own
// blocks: first come, first routed, so neither the last writer nor a longer prefix inside
// someone else's block takes traffic over. The rest is refused, recorded with why, and
// reported (onRefused) once the refusal has lasted a while.
//
// A peer's decision depends only on the authority's assignments and the other peers'
// routes that share an address with what it claims. So a peer is verified again (in one
// pass per burst) only when one of those changed: when the authority's assignments change
// (it names the CIDRs a change touched), every peer claiming something overlapping them;
// when a peer goes, gives up or takes a route, every peer refused something overlapping
// it for overlapping a route. Indexes of the claims and of those refusals find them, so a
// new Node costs the peers concerned, not a pass over every peer (with thousands of peers,
// that held up the forwarder on the same event loop for every Node added). reverifyAll()
// still checks every peer. Every handler is guarded: an exception is logged and counted,
// and the peer is left without routes, never the agent without its event loop.
import type { Logger } from '../common/log.ts';
import { RouteTable } from '../dataplane/route-table.ts';
import type { PeerDirectory, PeerInfo, RefusedCidr } from '../overlay/directory.ts';
import type { AuthorityChange, PodCidrAuthority } from './pod-cidr-authority.ts';

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

/** CIDRs per node, and which nodes have one that shares an address with a given CIDR. */
class NodeCidrs {
  readonly #table = new RouteTable<Set<string>>();
  readonly #byNode = new Map<string, readonly string[]>();

  of(node: string): readonly string[] {
    return this.#byNode.get(node) ?? [];
  }

  /** Replaces what `node` has (nothing: forgets it). */
  set(node: string, cidrs: readonly string[]): void {
    for (const cidr of this.of(node)) {
      const nodes = this.#table.get(cidr);
      nodes?.delete(node);
      if (nodes?.size === 0) this.#table.remove(cidr);
    }
    for (const cidr of cidrs) {
      const nodes = this.#table.get(cidr);
      if (nodes) nodes.add(node);
      else this.#table.insert(cidr, new Set([node]));
    }
    if (cidrs.length > 0) this.#byNode.set(node, [...cidrs]);
    else this.#byNode.delete(node);
  }

  /** Every node with a CIDR that shares an address with `cidr`. */
  overlapping(cidr: string): Set<string> {
    const out = new Set<string>();
    for (const nodes of this.#table.overlapping(cidr)) for (const n of nodes) out.add(n);
    return out;
  }
}

export class PeerRouteVerifier {
  readonly #o: PeerRouteVerifierOptions;
  readonly #log: Logger;
  readonly #local = new RouteTable<true>();
  /** What the table routes to each peer (from its peer:routes events). */
  readonly #routed = new NodeCidrs();
  /** What each peer claims (its annotated pod CIDRs): whom an authority change concerns. */
  readonly #claimed = new NodeCidrs();
  /**
   * What each peer claims that the authority backs but that was refused for overlapping a
   * route (another peer's, or this node's): whom a route given up or taken concerns. No
   * other claim depends on the routes (first come: nobody is routed what overlaps a route).
   */
  readonly #blocked = new NodeCidrs();
  /** Peers to verify again in the next pass, gathered over the burst. */
  readonly #pending = new Set<string>();
  #reverifyPending: NodeJS.Immediate | undefined;
  /** Refusals waiting to be reported (see reportRefusalsAfterMs). */
  readonly #reportTimers = new Map<string, NodeJS.Timeout>();
  #stopped = false;
  readonly #unsubscribe: Array<() => void> = [];
  /** Exceptions caught in event handlers (a bug or input nobody foresaw; the peer is left unrouted). */
  handlerErrors = 0;
  /** Scheduled passes run, and how many peers they verified in all (for tests and the bench). */
  readonly passes = { runs: 0, peersVerified: 0 };

  constructor(opts: PeerRouteVerifierOptions) {
    this.#o = opts;
    this.#log = opts.logger;
    for (const c of opts.localCidrs) this.#local.insert(c, true);
    const { directory, authority } = opts;
    // Peers the table holds already (none, as the agent builds it) count like later ones.
    for (const p of directory.list()) {
      this.#claimed.set(p.node, p.podCidrs);
      this.#routed.set(p.node, directory.routesOf(p.node));
    }
    const onUpsert = (p: PeerInfo) =>
      this.#guarded('verify', p, () => {
        this.#claimed.set(p.node, p.podCidrs);
        // Verified now, with what holds now: a pending check of it would add nothing.
        this.#pending.delete(p.node);
        this.#apply(p);
      });
    const onRemoved = (p: PeerInfo) =>
      this.#guarded('peer:removed', undefined, () => {
        const held = this.#routed.of(p.node);
        this.#routed.set(p.node, []);
        this.#claimed.set(p.node, []);
        this.#blocked.set(p.node, []);
        this.#pending.delete(p.node);
        clearTimeout(this.#reportTimers.get(p.node));
        this.#reportTimers.delete(p.node);
        // A CIDR refused because this peer held it may be free now.
        this.#concern(this.#blocked, held);
      });
    const onRoutes = (node: string, routes: string[]) =>
      this.#guarded('peer:routes', undefined, () => {
        const before = this.#routed.of(node);
        this.#routed.set(node, routes);
        // A route given up may be what another peer was refused for; one taken changes who
        // such a refusal names.
        const changed = [...before.filter((c) => !routes.includes(c)), ...routes.filter((c) => !before.includes(c))];
        this.#concern(this.#blocked, changed, node);
      });
    const onAuthority = (change: AuthorityChange) =>
      this.#guarded('authority change', undefined, () => this.#concern(this.#claimed, change.cidrs));
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

  /** Verifies every peer now (a fallback: the scheduled passes verify only the peers concerned). */
  reverifyAll(): void {
    this.#pending.clear();
    for (const p of this.#o.directory.list()) this.#guarded('reverify', p, () => this.#apply(p));
  }

  /** Stops listening and reporting. */
  stop(): void {
    this.#stopped = true;
    for (const off of this.#unsubscribe.splice(0)) off();
    if (this.#reverifyPending) clearImmediate(this.#reverifyPending);
    this.#reverifyPending = undefined;
    this.#pending.clear();
    for (const timer of this.#reportTimers.values()) clearTimeout(timer);
    this.#reportTimers.clear();
  }

  /** Routes the CIDRs of `p` the cluster backs and nobody else holds; records and reports the rest. */
  #apply(p: PeerInfo): void {
    const { directory, authority } = this.#o;
    const verdict = authority.verify(p.node, p.podCidrs);
    const routes: string[] = [];
    const blocked: string[] = [];
    const refused = [...verdict.refused];
    for (const cidr of verdict.accepted) {
      const holders = this.#routed.overlapping(cidr);
      holders.delete(p.node);
      if (this.#local.overlapping(cidr).length > 0) holders.add('this node');
      if (holders.size > 0) {
        blocked.push(cidr);
        refused.push({ cidr, reason: `overlaps a pod CIDR routed to ${[...holders].sort().join(', ')}` });
      } else routes.push(cidr);
    }
    this.#blocked.set(p.node, blocked);
    const previous = directory.routesOf(p.node);
    const refusedBefore = JSON.stringify(directory.refusedOf(p.node));
    // The peer:routes this emits when the routes change has the peers concerned verified again.
    if (directory.setRoutes(p.node, routes, refused)) {
      this.#log.info({ peer: p.node, site: p.site, podCidrs: routes, previous }, 'peer routes changed');
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

  /** Has every peer (but `except`) with something in `index` that shares an address with `cidrs` verified in the next pass. */
  #concern(index: NodeCidrs, cidrs: readonly string[], except?: string): void {
    for (const cidr of cidrs) for (const n of index.overlapping(cidr)) if (n !== except) this.#pending.add(n);
    if (this.#pending.size > 0) this.#scheduleReverify();
  }

  /** Verifies the pending peers once the current burst of events is over (IPAMBlocks arrive in bursts). */
  #scheduleReverify(): void {
    if (this.#reverifyPending || this.#stopped) return;
    this.#reverifyPending = setImmediate(() => {
      this.#reverifyPending = undefined;
      if (this.#pending.size === 0) return;
      this.passes.runs++;
      // A peer this pass concerns again (a route one of them gave up) is verified in it when
      // its turn is still to come, else in the next pass; one verified since (updated,
      // removed, reverifyAll) is no longer pending.
      for (const node of [...this.#pending]) {
        if (!this.#pending.delete(node)) continue;
        const p = this.#o.directory.get(node);
        if (p === undefined) continue;
        this.passes.peersVerified++;
        this.#guarded('reverify', p, () => this.#apply(p));
      }
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
      // A peer whose CIDRs could not be verified must not keep routes from before (what it
      // gives up concerns other peers: the peer:routes handler has them verified again).
      try {
        const refused = peer.podCidrs.map((cidr) => ({ cidr, reason: 'verifying it failed (see the agent log)' }));
        this.#o.directory.setRoutes(peer.node, [], refused);
      } catch {
        // a subscriber failed too; already logged above, nothing more to undo
      }
    }
  }
}
