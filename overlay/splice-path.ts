// The relayed stream's TCP splice (docs/stream-relay.md) as the overlay uses it: the member's
// splice client, the relay's splice service when this node runs one, which connections are
// spliced, and when a peer's circuit-only tunnel moves onto a splice.
import type { Connection } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { PeerDirectory } from './directory.ts';
import type { Host } from './host.ts';
import type { HostInternals } from './libp2p-internals.ts';
import type { PathPlan } from './path-policy.ts';
import { leadsPunch } from './path-policy.ts';
import type { PeerSession } from './peer-session.ts';
import { SpliceClient, type SpliceClientCounters } from './splice-client.ts';
import type { SpliceCounters, SpliceRelay } from './splice-relay.ts';
import { SpliceService, type SpliceServiceCounters } from './splice-service.ts';

/** The stream fallback's TCP splice: ours as a member, and the relay's when we run one. */
export type SplicePathCounters = SpliceClientCounters & {
  relay?: SpliceServiceCounters &
    Omit<SpliceCounters, 'refused'> & {
      /** Sockets closed without a splice (bad-token, address-mismatch, hello-timeout, ...). */
      sockets: Record<string, number>;
      active: number;
      pending: number;
      bytes: number;
    };
};

export interface SplicePathDeps {
  host: Host;
  internals: HostInternals;
  directory: PeerDirectory;
  /** This node's TCP splice relay (absent unless it is a relay node running one). */
  relay: SpliceRelay | undefined;
  /** Our own peer id (the punch leader asks for the splice). */
  peerId: string;
  planFor(node: string): PathPlan;
  /** Whether we have a UDP socket at all, and whether UDP carries the node now. */
  hasUdp(): boolean;
  udpCarries(node: string): boolean;
  /** Opens a tunnel stream on the spliced connection. */
  openTunnel(session: PeerSession, conn: Connection): Promise<unknown>;
  stopped(): boolean;
  log: Logger;
}

/** With a UDP socket, UDP gets this long to take a circuit-only peer over before we splice. */
const UDP_GRACE_MS = 3000;

export class SplicePath {
  readonly #d: SplicePathDeps;
  readonly #client: SpliceClient;
  readonly #spliced = new Set<string>(); // ids of connections over a relay's TCP splice

  constructor(deps: SplicePathDeps) {
    this.#d = deps;
    const { host, relay, directory: dir, log } = deps;
    const service =
      relay === undefined
        ? undefined
        : new SpliceService({
            host,
            relay,
            isMember: (peerId) => dir.has(peerId),
            log: log.child({ component: 'splice-relay' }),
          });
    if (relay !== undefined) dir.on('peer:removed', (peer) => relay.dropMember(peer.peerId));
    this.#client = new SpliceClient({
      host,
      internals: deps.internals,
      directory: dir,
      log,
      service,
      onConnection: (conn) => {
        this.#spliced.add(conn.id);
        conn.addEventListener('close', () => this.#spliced.delete(conn.id), { once: true });
      },
    });
    this.#client.start();
  }

  /** Whether the connection runs over a relay's TCP splice. */
  isSpliced(connectionId: string): boolean {
    return this.#spliced.has(connectionId);
  }

  /**
   * Moves a peer's stream tunnel off the circuit relay onto a relay's TCP splice: the circuit
   * (libp2p's hop pipe: decrypt/re-encrypt, no backpressure) then carries signalling only.
   * The punch leader asks; with a UDP socket we first give UDP a few seconds to take over.
   */
  maybeSplice(session: PeerSession): void {
    const d = this.#d;
    const current = session.preferred();
    const circuitOnly = current !== undefined && !current.direct && !current.spliced && !d.udpCarries(session.node);
    if (!circuitOnly) {
      session.circuitOnlySince = 0;
      return;
    }
    const now = Date.now();
    if (session.circuitOnlySince === 0) session.circuitOnlySince = now;
    if (session.splicing || d.stopped() || now < session.nextSpliceAt) return;
    if (d.hasUdp() && now - session.circuitOnlySince < UDP_GRACE_MS) return;
    if (!leadsPunch(d.peerId, session.peerId) || d.planFor(session.node).kind !== 'relayed') return;
    session.splicing = true;
    this.#client
      .splice(session.peerId)
      .then(async (conn) => {
        session.spliceFailures = 0;
        await d.openTunnel(session, conn);
        d.log.info({ peer: session.node, remote: conn.remoteAddr.toString() }, 'relayed tunnel moved to a splice');
      })
      .catch((err: Error) => {
        session.spliceFailures++;
        session.nextSpliceAt = Date.now() + Math.min(60_000, 1000 * 2 ** session.spliceFailures);
        d.log.info({ peer: session.node, err: err.message }, 'splice failed, staying on the circuit relay');
      })
      .finally(() => {
        session.splicing = false;
      });
  }

  counters(): SplicePathCounters {
    const c = this.#client.counters;
    const svc = this.#client.service;
    const own = { established: c.established, accepted: c.accepted, failed: { ...c.failed } };
    if (svc === undefined) return own;
    const r = svc.relay;
    return {
      ...own,
      relay: {
        granted: svc.counters.granted,
        refused: { ...svc.counters.refused },
        issued: r.counters.issued,
        spliced: r.counters.spliced,
        expired: r.counters.expired,
        sockets: { ...r.counters.refused },
        limited: { ...r.counters.limited },
        active: r.active,
        pending: r.pending,
        bytes: r.bytes,
      },
    };
  }

  stop(): void {
    this.#client.stop();
  }
}
