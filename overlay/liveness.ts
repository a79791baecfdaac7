// Liveness and idle close of the peers' paths: a keepalive probe on every open connection
// that carries a tunnel (a silent one is aborted so the session falls back or reconnects),
// and connections on demand (tunnels and UDP sessions without traffic are closed).
import { peerIdFromString } from '@libp2p/peer-id';
import type { Logger } from 'pino';
import type { PeerInfo } from './directory.ts';
import type { Host } from './host.ts';
import { ConnectionProbe } from './keepalive.ts';
import type { PeerSession, PeerSessions } from './peer-session.ts';

/** What idle close needs of the UDP carrier (overlay/udp-carrier.ts). */
export interface LivenessUdp {
  sessions: { current(node: string): unknown };
  drop(node: string): void;
}

export interface LivenessDeps {
  host: Pick<Host, 'hangUp'>;
  sessions: PeerSessions;
  directory: { get(node: string): PeerInfo | undefined };
  /** Hands a session with a ready tunnel to the forwarder (a no-op when it already has it). */
  attach(session: PeerSession): void;
  /** The UDP carrier (undefined without a UDP socket). */
  udp(): LivenessUdp | undefined;
  /** We are a relay node: connections of our peers are their reservations, never hung up. */
  relay: boolean;
  /** How long a direct path may be silent (default 1500 ms). */
  deadAfterMs?: number;
  /** Tunnels and UDP sessions without traffic for this long are closed (default 120 s). */
  idleTimeoutMs?: number;
  log: Logger;
}

export class Liveness {
  readonly #d: LivenessDeps;
  readonly #probes = new Map<string, ConnectionProbe>();

  constructor(deps: LivenessDeps) {
    this.#d = deps;
  }

  /** Traffic on a connection proves it alive (its probe, if any, starts a new silence). */
  noteTraffic(connectionId: string): void {
    this.#probes.get(connectionId)?.noteTraffic();
  }

  keepalive(): void {
    const deadAfter = this.#d.deadAfterMs ?? 1500;
    const live = new Set<string>();
    for (const session of this.#d.sessions.values()) {
      if (!session.attached && session.preferred() !== undefined) this.#d.attach(session);
      for (const t of session.tunnels) {
        const conn = t.connection;
        if (conn.status !== 'open' || live.has(conn.id)) continue;
        live.add(conn.id);
        let probe = this.#probes.get(conn.id);
        if (probe === undefined) {
          probe = new ConnectionProbe(conn);
          this.#probes.set(conn.id, probe);
        }
        // The relay is the fallback: only a long silence condemns it (queues on a busy
        // relay can delay an echo by seconds; a direct path is held to a tighter bound).
        if (probe.tick(t.direct ? deadAfter : Math.max(deadAfter, 10_000))) {
          if (session.preferred()?.connection.id === conn.id && probe.rttMs !== undefined) session.rttMs = probe.rttMs;
          continue;
        }
        this.#d.log.warn({ peer: session.node, remote: conn.remoteAddr.toString() }, 'path dead: no keepalive echo');
        conn.abort(new Error(`path silent for more than ${deadAfter} ms`));
      }
    }
    for (const [id, probe] of this.#probes) {
      if (live.has(id)) continue;
      probe.close();
      this.#probes.delete(id);
    }
  }

  closeIdle(): void {
    const idle = this.#d.idleTimeoutMs ?? 120_000;
    const udp = this.#d.udp();
    const now = Date.now();
    for (const session of this.#d.sessions.values()) {
      if (session.connecting) continue;
      const udpIdle = now - session.udpActivity >= idle;
      if (udpIdle && udp?.sessions.current(session.node) !== undefined && session.tunnels.size === 0) {
        this.#d.log.info({ peer: session.node }, 'closing idle UDP session');
        udp.drop(session.node);
      }
      if (session.tunnels.size === 0) continue;
      const last = Math.max(...[...session.tunnels].map((t) => t.lastActivity));
      if (now - last < idle) continue;
      // UDP carries the traffic: the stream tunnel may close, the UDP session stays.
      if (!udpIdle) {
        for (const t of session.tunnels) void t.close();
        continue;
      }
      udp?.drop(session.node);
      this.#d.log.info({ peer: session.node }, 'closing idle tunnel');
      for (const t of session.tunnels) void t.close();
      const peer = this.#d.directory.get(session.node);
      // Keep connections to relays, and as a relay keep the peers' reservation connections.
      if (!this.#d.relay && peer?.relay !== true)
        void this.#d.host.hangUp(peerIdFromString(session.peerId)).catch(() => {});
    }
  }
}
