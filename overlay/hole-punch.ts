// Our own hole punch (stock DCUtR cannot work here, see docs/architecture.md): the leader opens
// /edgemesh/punch/1.0.0 over the relayed connection and both sides exchange their public
// IP (what the relay observes, via identify) and announced punch port. Then both do a TCP
// simultaneous open FROM their fixed punch port, retrying for a few seconds; each NAT sees
// an outbound SYN first, so the other's SYN matches existing state and passes. The socket
// is upgraded through libp2p's upgrader with explicit roles: leader = outbound (noise
// initiator, yamux client), the other = inbound.
import net from 'node:net';
import type { Connection, Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import { ipOf, ipPortToMultiaddr, isCircuit, isPublicIp } from './addresses.ts';
import { withDeadline } from './deadline.ts';
import type { PeerDirectory, PeerInfo } from './directory.ts';
import type { Host } from './host.ts';
import { JsonLineReader, sendJsonLine } from './json-lines.ts';
import type { HostInternals } from './libp2p-internals.ts';
import { ObservedAddressError, queryObservedAddress, relayOfCircuit } from './observed-address.ts';
import { DEFAULT_GUARD_LIMITS, PunchGuard, type PunchGuardLimits } from './punch-schedule.ts';
import { socketToMultiaddrConnection } from './socket-conn.ts';

export const PUNCH_PROTOCOL = '/edgemesh/punch/1.0.0';
const MAX_MESSAGE = 4096;

export interface PunchCounters {
  attempts: number;
  successes: number;
  failures: Record<string, number>;
  /** Duration of the last successful punch (signal to upgraded connection), ms. */
  lastDurationMs: number | undefined;
}

export class PunchError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'PunchError';
    this.reason = reason;
  }
}

export interface PunchOffer {
  v: 1;
  ip: string;
  port: number;
}

type PunchAnswer = PunchOffer | { v: 1; error: string };

export interface HolePunchOptions {
  host: Host;
  internals: HostInternals;
  punchPort: number;
  directory: PeerDirectory;
  log: Logger;
  /** Called with every connection a punch produced (both roles). */
  onConnection: (conn: Connection) => void;
  /** How long both sides keep sending SYNs. */
  openTimeoutMs?: number;
  /** Admission limits for punches peers ask of us. */
  guardLimits?: PunchGuardLimits;
}

export class HolePunch {
  readonly counters: PunchCounters = { attempts: 0, successes: 0, failures: {}, lastDurationMs: undefined };
  readonly #o: HolePunchOptions;
  readonly #aborts = new Set<AbortController>();
  readonly #guard: PunchGuard;

  constructor(opts: HolePunchOptions) {
    this.#o = opts;
    this.#guard = new PunchGuard(opts.guardLimits ?? DEFAULT_GUARD_LIMITS);
  }

  start(): void {
    void this.#o.host.handle(PUNCH_PROTOCOL, (stream, conn) => this.#respond(stream, conn), {
      runOnLimitedConnection: true,
      maxInboundStreams: 4,
    });
  }

  stop(): void {
    for (const a of this.#aborts) a.abort(new Error('overlay stopping'));
  }

  /** Leader side: punch a direct connection to `peer`, signalling over `relayed`. */
  async punch(relayed: Connection, peer: PeerInfo): Promise<Connection> {
    const started = Date.now();
    this.counters.attempts++;
    try {
      const ownIp = await this.publicIp();
      const stream = await withDeadline(5000, 'punch stream', (signal) =>
        relayed.newStream(PUNCH_PROTOCOL, { runOnLimitedConnection: true, signal }),
      );
      const reader = new JsonLineReader(stream, MAX_MESSAGE, punchFailure);
      sendJsonLine(stream, { v: 1, ip: ownIp, port: this.#o.punchPort } satisfies PunchAnswer);
      const answer = (await reader.next(5000)) as PunchAnswer;
      void stream.close().catch(() => {});
      if ('error' in answer) throw new PunchError('peer-refused', `peer refused the punch: ${answer.error}`);
      validateOffer(answer);
      const conn = await this.#openAndUpgrade(peer.peerId, answer, 'outbound');
      this.counters.successes++;
      this.counters.lastDurationMs = Date.now() - started;
      this.#o.log.info({ peer: peer.node, ms: this.counters.lastDurationMs, remote: answer }, 'hole punch succeeded');
      return conn;
    } catch (err) {
      const reason = err instanceof PunchError ? err.reason : 'error';
      this.counters.failures[reason] = (this.counters.failures[reason] ?? 0) + 1;
      throw err;
    }
  }

  /**
   * Responder side: answer with our public endpoint and punch towards the leader. The leader
   * is a member but may be hostile: its offered IP must be the one the relay (or the direct
   * connection) sees it at, one punch per peer at a time, a bounded number per minute.
   */
  async #respond(stream: Stream, conn: Connection): Promise<void> {
    const leader = conn.remotePeer.toString();
    const peer = this.#o.directory.byPeerId(leader);
    const reader = new JsonLineReader(stream, MAX_MESSAGE, punchFailure);
    let admitted = false;
    try {
      const offer = (await reader.next(5000)) as PunchOffer;
      validateOffer(offer);
      if (peer === undefined) throw new PunchError('unknown-peer', 'peer is not in the directory');
      const admission = this.#guard.admit(leader, Date.now());
      if (!admission.ok) throw new PunchError(admission.reason, `punch refused: ${admission.reason}`);
      admitted = true;
      const observed = await this.#observedIpOf(conn, leader);
      if (observed !== offer.ip) {
        throw new PunchError(
          'address-mismatch',
          `offered address ${offer.ip} is not where the peer is seen from (${observed})`,
        );
      }
      this.counters.attempts++;
      const started = Date.now();
      const ownIp = await this.publicIp();
      sendJsonLine(stream, { v: 1, ip: ownIp, port: this.#o.punchPort } satisfies PunchAnswer);
      void stream.close().catch(() => {});
      await this.#openAndUpgrade(peer.peerId, offer, 'inbound');
      this.counters.successes++;
      this.counters.lastDurationMs = Date.now() - started;
      this.#o.log.info({ peer: peer.node, ms: this.counters.lastDurationMs }, 'hole punch succeeded (responder)');
    } catch (err) {
      const reason = err instanceof PunchError ? err.reason : 'error';
      this.counters.failures[reason] = (this.counters.failures[reason] ?? 0) + 1;
      this.#o.log.info({ peer: peer?.node, err: (err as Error).message }, 'hole punch (responder) failed');
      if (stream.status === 'open') {
        try {
          sendJsonLine(stream, { v: 1, error: (err as Error).message } satisfies PunchAnswer);
          await stream.close();
        } catch {
          stream.abort(err as Error);
        }
      }
    } finally {
      if (admitted) this.#guard.release(leader);
    }
  }

  /** The public IP a relay sees `peer` connect from (its reservation connection's remote IP). */
  async relayObservedIpOf(peer: string): Promise<string> {
    for (const conn of this.#o.host.getConnections()) {
      if (conn.status !== 'open' || isCircuit(conn.remoteAddr)) continue;
      if (this.#o.directory.byPeerId(conn.remotePeer.toString())?.relay !== true) continue;
      try {
        return await queryObservedAddress(conn, peer, 3000);
      } catch {
        // try the next relay
      }
    }
    throw new PunchError('address-unknown', 'no relay knows where the peer connects from');
  }

  /**
   * The public IP `peer` is seen from: the remote IP of a direct connection, or, for a relayed
   * one, what the relay carrying it observes (its reservation connection from the peer's NAT).
   */
  async #observedIpOf(conn: Connection, peer: string): Promise<string> {
    if (!isCircuit(conn.remoteAddr)) {
      const ip = ipOf(conn.remoteAddr);
      if (ip === undefined) throw new PunchError('address-unknown', 'cannot tell where the peer connects from');
      return ip;
    }
    const relayId = relayOfCircuit(conn.remoteAddr);
    const relayConn = this.#o.host
      .getConnections()
      .find(
        (c) =>
          c.status === 'open' &&
          !isCircuit(c.remoteAddr) &&
          (relayId === undefined
            ? this.#o.directory.byPeerId(c.remotePeer.toString())?.relay === true
            : c.remotePeer.toString() === relayId),
      );
    if (relayConn === undefined)
      throw new PunchError('address-unknown', 'no connection to the relay carrying the peer');
    try {
      return await queryObservedAddress(relayConn, peer);
    } catch (err) {
      const reason = err instanceof ObservedAddressError ? err.reason : 'error';
      throw new PunchError(
        'address-unknown',
        `relay cannot confirm the peer's address (${reason}): ${(err as Error).message}`,
      );
    }
  }

  /**
   * Our public IP as a relay observes it: identify's observed address on the relay link,
   * else the relay's answer to /edgemesh/observed/1.0.0 about ourselves.
   */
  async publicIp(): Promise<string> {
    const relays = this.#o.directory.relays();
    const self = this.#o.host.peerId.toString();
    for (const conn of this.#o.host.getConnections()) {
      if (isCircuit(conn.remoteAddr) || conn.status !== 'open') continue;
      if (!relays.some((r) => r.peerId === conn.remotePeer.toString())) continue;
      try {
        const result = await withDeadline(3000, 'identify', (signal) =>
          this.#o.host.services.identify.identify(conn, { signal }),
        );
        const ip = result.observedAddr ? ipOf(result.observedAddr) : undefined;
        if (ip !== undefined && isPublicIp(ip)) return ip;
      } catch {
        // ask the relay directly below
      }
      try {
        const ip = await queryObservedAddress(conn, self, 3000);
        if (isPublicIp(ip)) return ip;
      } catch {
        // try the next relay
      }
    }
    throw new PunchError('no-observed-address', 'no relay told us our public address');
  }

  async #openAndUpgrade(remotePeer: string, remote: PunchOffer, role: 'outbound' | 'inbound'): Promise<Connection> {
    const socket = await this.#simultaneousOpen(remote.ip, remote.port);
    const remoteAddr = ipPortToMultiaddr(remote.ip, remote.port).encapsulate(`/p2p/${remotePeer}`);
    const maConn = socketToMultiaddrConnection({
      socket,
      remoteAddr,
      direction: role,
      log: this.#o.internals.logger.forComponent('edgemesh:punch:connection'),
    });
    const abort = new AbortController();
    this.#aborts.add(abort);
    const timer = setTimeout(() => abort.abort(new PunchError('upgrade-timeout', 'upgrade took too long')), 10_000);
    const signal = abort.signal;
    try {
      if (role === 'outbound') {
        const conn = await this.#o.internals.upgrader.upgradeOutbound(maConn, { signal, initiator: true });
        this.#o.onConnection(conn);
        return conn;
      }
      // upgradeInbound hands the connection to the connection manager and returns
      // nothing: pick it up from the connection:open event.
      const opened = new Promise<Connection>((resolve) => {
        const onOpen = (evt: CustomEvent<Connection>) => {
          if (evt.detail.remotePeer.toString() !== remotePeer || isCircuit(evt.detail.remoteAddr)) return;
          if (!evt.detail.remoteAddr.equals(remoteAddr)) return;
          this.#o.internals.events.removeEventListener('connection:open', onOpen);
          resolve(evt.detail);
        };
        this.#o.internals.events.addEventListener('connection:open', onOpen);
        signal.addEventListener('abort', () => this.#o.internals.events.removeEventListener('connection:open', onOpen));
      });
      // Expected peer ID is in remoteAddr: the upgrader makes noise verify it.
      await this.#o.internals.upgrader.upgradeInbound(maConn, { signal });
      const conn = await opened;
      this.#o.onConnection(conn);
      return conn;
    } catch (err) {
      maConn.abort(err as Error);
      throw new PunchError('upgrade-failed', `upgrade of the punched socket failed: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
      this.#aborts.delete(abort);
    }
  }

  /** Sends SYNs from our punch port to the peer's until one connects or time runs out. */
  async #simultaneousOpen(ip: string, port: number): Promise<net.Socket> {
    const deadline = Date.now() + (this.#o.openTimeoutMs ?? 8000);
    let lastError = 'timeout';
    while (Date.now() < deadline) {
      const attemptMs = Math.min(2500, deadline - Date.now());
      try {
        return await connectOnce(ip, port, this.#o.punchPort, attemptMs);
      } catch (err) {
        lastError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        // A RST (the peer's host had no socket yet) comes back at once: pace the retries.
        await new Promise((r) => setTimeout(r, 150));
      }
    }
    throw new PunchError('no-direct-path', `simultaneous open to ${ip}:${port} failed (${lastError})`);
  }
}

function connectOnce(ip: string, port: number, localPort: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    // libuv sets SO_REUSEADDR on the bind, so several attempts (and peers) can share the
    // punch port as long as nothing listens on it.
    const socket = net.connect({ host: ip, port, localPort, localAddress: net.isIPv6(ip) ? '::' : '0.0.0.0' });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('timeout'));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

function punchFailure(reason: string, message: string): PunchError {
  return new PunchError(reason, message);
}

/** Checks a punch offer or answer from a peer; throws PunchError("bad-message") for anything else. */
export function validateOffer(o: unknown): asserts o is PunchOffer {
  const offer = o as Partial<PunchOffer> | null;
  if (
    offer === null ||
    typeof offer !== 'object' ||
    offer.v !== 1 ||
    typeof offer.ip !== 'string' ||
    !isPublicIp(offer.ip) ||
    !Number.isInteger(offer.port) ||
    offer.port! < 1 ||
    offer.port! > 65535
  ) {
    throw new PunchError('bad-message', 'malformed punch message');
  }
}
