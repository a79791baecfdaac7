// When the overlay tries to get a relayed peer onto a direct path: a hole punch led by the
// punch leader (in the background, retried on overlay/punch-schedule.ts's backoff, or now on
// request), or a direct dial back when the peer that reached us over a relay is public.
// The punch itself is overlay/hole-punch.ts's.
import type { Connection } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Logger } from 'pino';
import { isCircuit, withPeer } from './addresses.ts';
import { withDeadline } from './deadline.ts';
import type { PeerInfo } from './directory.ts';
import type { HolePunch } from './hole-punch.ts';
import type { Host } from './host.ts';
import type { PathKind } from './path-kind.ts';
import { leadsPunch, type PathPlan } from './path-policy.ts';
import type { PeerSession, PeerSessions } from './peer-session.ts';
import { punchRetryDelayMs } from './punch-schedule.ts';

export interface PunchSchedulerDeps {
  host: Pick<Host, 'dial' | 'getConnections'>;
  punch: Pick<HolePunch, 'punch'>;
  directory: { get(node: string): PeerInfo | undefined };
  sessions: PeerSessions;
  /** Our own peer id (the punch leader punches in the background). */
  peerId: string;
  planFor(node: string): PathPlan;
  pathOf(node: string): PathKind;
  /** Opens a tunnel stream on the new direct connection. */
  openTunnel(session: PeerSession, conn: Connection): Promise<unknown>;
  /** Background punches (default on; benches turn them off). */
  autoPunch: boolean;
  stopped(): boolean;
  /** The other per-second chores of a session: the splice, and a UDP session where one is missing. */
  onTick(session: PeerSession): void;
  log: Logger;
}

export class PunchScheduler {
  readonly #d: PunchSchedulerDeps;

  constructor(deps: PunchSchedulerDeps) {
    this.#d = deps;
  }

  /** Every second: punch where it is due (and the session's other chores). */
  tick(): void {
    for (const session of this.#d.sessions.values()) {
      this.maybePunch(session);
      this.#d.onTick(session);
    }
  }

  /** Runs a hole punch to a peer now (we lead it) and resolves with the resulting path. */
  async punchNow(node: string): Promise<PathKind> {
    const session = this.#d.sessions.get(node);
    if (session === undefined) throw new Error(`no tunnel to ${node}: connect first`);
    const attempt = this.maybePunch(session, true);
    if (attempt === undefined) throw new Error(`cannot punch to ${node} now (path ${this.#d.pathOf(node)})`);
    await attempt;
    return this.#d.pathOf(node);
  }

  /**
   * The peer reached us over a relay: if it is public we can dial it directly instead, and
   * if both are behind NAT the punch leader starts the punch.
   */
  afterRelayedInbound(session: PeerSession, peer: PeerInfo): void {
    const plan = this.#d.planFor(peer.node);
    if (plan.kind === 'direct') void this.#upgradeToDirect(session, peer);
    else if (plan.kind === 'relayed' && plan.punch) this.maybePunch(session);
  }

  /** Starts a punch when one is due (explicit: now, whoever leads); undefined when none starts. */
  maybePunch(session: PeerSession, explicit = false): Promise<void> | undefined {
    const d = this.#d;
    if (session.punching || d.stopped()) return;
    if (!explicit && (!d.autoPunch || Date.now() < session.nextPunchAt)) return;
    const current = session.preferred();
    if (current === undefined || current.direct) return;
    const plan = d.planFor(session.node);
    if (plan.kind !== 'relayed' || !plan.punch) return;
    if (!explicit && !leadsPunch(d.peerId, session.peerId)) return;
    const peer = d.directory.get(session.node);
    if (peer === undefined) return;
    // Signal over the circuit: over a spliced connection the peer would see the relay's
    // address as ours and refuse the offer.
    const signalling =
      [...session.tunnels].find((t) => !t.closed && !t.spliced && !t.direct)?.connection ??
      d.host
        .getConnections(peerIdFromString(session.peerId))
        .find((c) => c.status === 'open' && isCircuit(c.remoteAddr));
    if (signalling === undefined) return;
    session.punching = true;
    return d.punch
      .punch(signalling, peer)
      .then(async (conn) => {
        session.punchFailures = 0;
        await d.openTunnel(session, conn);
      })
      .catch((err: Error) => {
        session.punchFailures++;
        // Start short (a mapping often settles within seconds, and the peer may simply not
        // have been ready), then back off: a NAT that keeps defeating us (symmetric) will
        // likely go on doing it.
        session.nextPunchAt = Date.now() + punchRetryDelayMs(session.punchFailures);
        d.log.info({ peer: session.node, err: err.message }, 'hole punch failed, staying relayed');
      })
      .finally(() => {
        session.punching = false;
      });
  }

  async #upgradeToDirect(session: PeerSession, peer: PeerInfo): Promise<void> {
    try {
      const conn = await withDeadline(10_000, 'direct dial back', (signal) =>
        this.#d.host.dial(
          peer.publicAddrs.map((ma) => withPeer(ma, peer.peerId)),
          { signal, force: true },
        ),
      );
      await this.#d.openTunnel(session, conn);
    } catch (err) {
      this.#d.log.info({ peer: peer.node, err: (err as Error).message }, 'direct dial back failed, staying relayed');
    }
  }
}
