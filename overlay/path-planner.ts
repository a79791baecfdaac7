// The path plan for each peer (overlay/path-policy.ts's choice) from the directory and what
// this node announces: its site, whether it is publicly reachable, its punch port, whether a
// relay is at hand.
import { isPublicIp } from './addresses.ts';
import type { PeerDirectory } from './directory.ts';
import { choosePath, type PathPlan, type PolicySelf } from './path-policy.ts';

export interface PathPlannerDeps {
  directory: PeerDirectory;
  /** Our own peer id (never a relay to ourselves). */
  peerId: string;
  site: string;
  /** The multiaddrs we listen on and announce (announce wins when given). */
  listen: string[];
  announce?: string[];
  punchPort: number;
  /** We are a relay node. */
  relay: boolean;
}

export class PathPlanner {
  readonly #d: PathPlannerDeps;

  constructor(deps: PathPlannerDeps) {
    this.#d = deps;
  }

  self(): Required<PolicySelf> {
    const announced = (this.#d.announce ?? this.#d.listen).some((a) => {
      const ip = a.split('/')[2];
      return ip !== undefined && isPublicIp(ip);
    });
    return { site: this.#d.site, publicReachable: announced, punchPort: this.#d.punchPort };
  }

  planFor(node: string): PathPlan {
    const dir = this.#d.directory;
    const peer = dir.get(node);
    if (peer === undefined) return { kind: 'none', reason: `node ${node} is not in the peer directory` };
    // A relay node counts itself: every NAT'd peer holds a reservation connection to it.
    const relays = this.#d.relay || dir.relays().some((r) => r.peerId !== peer.peerId && r.peerId !== this.#d.peerId);
    return choosePath(
      this.self(),
      {
        site: peer.site,
        publicReachable: peer.publicAddrs.length > 0,
        ...(peer.punchPort === undefined ? {} : { punchPort: peer.punchPort }),
      },
      relays,
    );
  }
}
