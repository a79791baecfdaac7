// Keeps the forwarder's LPM table equal to the peer table's routes (overlay/directory.ts):
// peer:routes → setPeer, peer:removed → removePeer. It lives in agent/ because it joins the
// two (dataplane/ imports neither overlay/ nor agent/). Every trusted peer is known to the
// forwarder from peer:added on, routed or not, as it was when the Node watch drove it.
//
// The routes it is given were checked against every other peer's and this node's own
// (agent/peer-routes.ts); the forwarder's own overlap check stays as a guard, and a CIDR
// it still refuses is a bug: logged and counted, not routed. A handler never throws into
// the table's emit (that would skip the subscribers after it): a failure is counted and
// the peer left without routes.
import type { Logger } from '../common/log.ts';
import type { PeerDirectory, PeerInfo } from '../overlay/directory.ts';

/** What the binding needs from the forwarder (dataplane/forwarder.ts). */
export interface ForwarderPeers {
  /** Returns the CIDRs it refused (overlapping another peer's or this node's). */
  setPeer(node: string, podCidrs: string[]): string[];
  removePeer(node: string): void;
}

export interface ForwarderRoutes {
  /** Exceptions caught while programming the forwarder. */
  readonly errors: number;
  /** CIDRs the forwarder refused although the table routes them (should stay 0). */
  readonly refusedByForwarder: number;
  /** Stops following the table (the forwarder keeps what it has). */
  stop(): void;
}

export function routeForwarder(directory: PeerDirectory, forwarder: ForwarderPeers, log: Logger): ForwarderRoutes {
  let errors = 0;
  let refusedByForwarder = 0;
  const program = (node: string, routes: string[]): void => {
    try {
      const refused = forwarder.setPeer(node, routes);
      if (refused.length > 0) {
        refusedByForwarder += refused.length;
        log.error({ peer: node, refused }, 'the forwarder refused pod CIDRs the peer table routes (a bug)');
      }
    } catch (err) {
      errors++;
      log.error(
        { peer: node, err: err instanceof Error ? err.message : String(err) },
        'programming the forwarder failed',
      );
      // No routes from before may stay; if even that fails, the peer goes (the overlay
      // attaches its link again when it has one).
      try {
        forwarder.setPeer(node, []);
      } catch {
        try {
          forwarder.removePeer(node);
        } catch {
          // logged above; nothing more to undo
        }
      }
    }
  };
  const onAdded = (p: PeerInfo) => program(p.node, directory.routesOf(p.node));
  const onRoutes = (node: string, routes: string[]) => program(node, routes);
  const onRemoved = (p: PeerInfo) => {
    try {
      forwarder.removePeer(p.node);
    } catch (err) {
      errors++;
      log.error({ peer: p.node, err: err instanceof Error ? err.message : String(err) }, 'removing a peer failed');
    }
  };
  directory.on('peer:added', onAdded);
  directory.on('peer:routes', onRoutes);
  directory.on('peer:removed', onRemoved);
  return {
    get errors() {
      return errors;
    },
    get refusedByForwarder() {
      return refusedByForwarder;
    },
    stop() {
      directory.off('peer:added', onAdded);
      directory.off('peer:routes', onRoutes);
      directory.off('peer:removed', onRemoved);
    },
  };
}
