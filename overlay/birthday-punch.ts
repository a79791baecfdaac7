// Birthday punching (overlay/birthday-plan.ts says what and why) run against the session
// engine: per peer a series of attempts from each new session; the hard side opens its
// sockets (dataplane/udp-session.ts addSocket) and probes the easy side's mapping from each,
// the easy side sprays its data socket's probes at random ports of the hard side's public IP.
// Every probe is a sealed control message of the peer's session (the caller's `probe`), so
// only the peer can answer one and no AEAD nonce is ever reused. UdpPaths does the rest as
// for any probe: the answer's sender (on the hard side: with the socket it came in on)
// becomes the path. This module keeps the socket that heard the peer while the path lives
// and closes every other one; attempts, probes and outcomes are counted.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { isPublicIp } from './addresses.ts';
import {
  attemptStart,
  BIRTHDAY_TUNING,
  type BirthdayRole,
  type BirthdayTuning,
  distinctPorts,
  ProbeBucket,
  sprayDue,
} from './birthday-plan.ts';
import type { UdpEndpoint } from './udp-types.ts';

export interface BirthdayCounters {
  /** Attempts started, by role. */
  attemptsHard: number;
  attemptsEasy: number;
  probesSent: number;
  /** Probes the node-wide rate bound held back at least once (sent later, or not within the attempt). */
  rateLimited: number;
  socketsOpened: number;
  /** Sockets the engine refused (its bound, or an errno). */
  socketErrors: number;
  /** Attempts in which the peer answered (on the hard side: on one of the attempt's sockets). */
  hits: number;
  /** Attempts that ended without a hit. */
  unanswered: number;
  /** Attempts cut short by a new session (which starts a new series). */
  superseded: number;
  /** Sessions with both sides endpoint-dependent: no birthday (relay), counted once per session. */
  bothHard: number;
  /** Easy-side series not started: no relay vouched for the peer's public IP (nothing to spray at). */
  unvouched: number;
}

/** The engine's side of it (UdpDataSocket). */
export interface BirthdaySockets {
  addSocket(): { id: number; port: number };
  closeSocket(id: number): boolean;
}

export interface BirthdayPunchOptions {
  sockets: BirthdaySockets;
  /** Sends one probe on the peer's session (sealed) to `to` (from `to.socket`); false: it did not leave. */
  probe: (node: string, to: UdpEndpoint, nonce: Uint8Array) => boolean;
  log: Logger;
  tuning?: BirthdayTuning;
}

interface Attempt {
  k: number;
  role: BirthdayRole;
  startedAt: number;
  nonce: Uint8Array;
  /** Hard: the attempt's sockets (id → port). */
  sockets: Map<number, number>;
  /** Hard: (socket, target) probes of the current round still to send. */
  queue: Array<{ socket: number; to: UdpEndpoint }>;
  rounds: number;
  /** Easy: the ports to spray, per target IP, and how many went out. */
  ports: number[];
  sprayed: number;
  /** Probes due but held back by the rate bound at the last tick (each counted once). */
  held: number;
  hit: boolean;
}

interface PeerBirthday {
  node: string;
  role: BirthdayRole;
  /** The peer's candidates at the session start (filtered by the carrier: the peer's own addresses). */
  candidates: UdpEndpoint[];
  seriesAt: number;
  attempt: Attempt | undefined;
  next: number;
  /** Sockets that heard the peer, kept for the path (id → when heard). */
  heard: Map<number, number>;
}

export class BirthdayPunch {
  readonly counters: BirthdayCounters = {
    attemptsHard: 0,
    attemptsEasy: 0,
    probesSent: 0,
    rateLimited: 0,
    socketsOpened: 0,
    socketErrors: 0,
    hits: 0,
    unanswered: 0,
    superseded: 0,
    bothHard: 0,
    unvouched: 0,
  };
  readonly #o: BirthdayPunchOptions;
  readonly #t: BirthdayTuning;
  readonly #peers = new Map<string, PeerBirthday>();
  readonly #bucket: ProbeBucket;

  constructor(opts: BirthdayPunchOptions, now = Date.now()) {
    this.#o = opts;
    this.#t = opts.tuning ?? BIRTHDAY_TUNING;
    this.#bucket = new ProbeBucket(this.#t.ratePerSecond, this.#t.burst, now);
  }

  /**
   * A new session without a direct path: a new series of attempts in `role` (undefined: none,
   * and whatever ran for the peer stops). Both sides see the session at about the same moment,
   * so their attempts line up.
   */
  start(node: string, role: BirthdayRole | undefined, candidates: readonly UdpEndpoint[], now: number): void {
    const old = this.#peers.get(node);
    // A second session right after the first (two handshakes that crossed, a rekey) while a
    // series in the same role still runs: the series goes on (both sides keep to it; the
    // probes use whichever session is current), rather than starting its sockets over.
    if (old !== undefined && role === old.role && attemptStart(old.next, this.#t) !== undefined && old.next > 0) {
      old.candidates = candidates.map((c) => ({ ip: c.ip, port: c.port }));
      return;
    }
    if (old?.attempt !== undefined) {
      if (!old.attempt.hit) this.counters.superseded++;
      this.#end(old, old.attempt, true);
    }
    if (role === undefined) {
      if (old !== undefined) this.lost(node);
      return;
    }
    this.#peers.set(node, {
      node,
      role,
      candidates: candidates.map((c) => ({ ip: c.ip, port: c.port })),
      seriesAt: now,
      attempt: undefined,
      next: 0,
      heard: old?.heard ?? new Map(),
    });
  }

  /** A session whose two sides are both endpoint-dependent (counted: the relay's case). */
  noteBothHard(): void {
    this.counters.bothHard++;
  }

  noteUnvouched(): void {
    this.counters.unvouched++;
  }

  /** The role of the series running for the node, if any. */
  role(node: string): BirthdayRole | undefined {
    return this.#peers.get(node)?.role;
  }

  /** Whether a reply's nonce is the one an attempt's probes carry. */
  isNonce(node: string, nonce: Uint8Array): boolean {
    const a = this.#peers.get(node)?.attempt;
    return a !== undefined && Buffer.compare(Buffer.from(a.nonce), Buffer.from(nonce)) === 0;
  }

  /** An authentic control message from the peer arrived on extra socket `socket`. */
  heard(node: string, socket: number, now: number): void {
    const p = this.#peers.get(node);
    if (p === undefined) return;
    const a = p.attempt;
    if (a?.sockets.has(socket)) {
      a.sockets.delete(socket);
      p.heard.set(socket, now);
      if (!a.hit) {
        a.hit = true;
        this.counters.hits++;
        this.#o.log.info({ peer: node, socket, attempt: a.k }, 'birthday punch: the peer got through');
      }
      return;
    }
    if (p.heard.has(socket)) p.heard.set(socket, now);
  }

  /** The easy side's spray was answered (a reply carrying the attempt's nonce). */
  answered(node: string): void {
    const a = this.#peers.get(node)?.attempt;
    if (a === undefined || a.hit) return;
    a.hit = true;
    this.counters.hits++;
    this.#o.log.info({ peer: node, attempt: a.k }, 'birthday punch: a spray probe got through');
  }

  /**
   * The path now uses `ep`: the series is done; its socket (if an extra one) stays open, every
   * other socket of the peer is closed.
   */
  adopted(node: string, ep: UdpEndpoint): void {
    const p = this.#peers.get(node);
    if (p === undefined) return;
    const keep = ep.socket ?? 0;
    const a = p.attempt;
    if (a !== undefined) {
      // The pair is direct while an attempt runs: that attempt did it (e.g. the peer's probe
      // through the opening our spray made arrived before any answer to the spray).
      if (!a.hit) {
        a.hit = true;
        this.counters.hits++;
      }
      this.#end(p, a, true, keep);
    }
    for (const id of p.heard.keys()) {
      if (id === keep) continue;
      this.#o.sockets.closeSocket(id);
      p.heard.delete(id);
    }
    p.next = Number.POSITIVE_INFINITY;
  }

  /** The peer's sessions are gone: everything of it is closed. */
  lost(node: string): void {
    const p = this.#peers.get(node);
    if (p === undefined) return;
    this.#peers.delete(node);
    if (p.attempt !== undefined) this.#end(p, p.attempt, p.attempt.hit);
    for (const id of p.heard.keys()) this.#o.sockets.closeSocket(id);
  }

  stop(): void {
    for (const node of [...this.#peers.keys()]) this.lost(node);
  }

  /** Extra sockets open now, over all peers (attempts and kept winners). */
  openSockets(): number {
    let n = 0;
    for (const p of this.#peers.values()) n += (p.attempt?.sockets.size ?? 0) + p.heard.size;
    return n;
  }

  /** Runs attempts: call every ~100 ms. */
  tick(now: number): void {
    for (const p of this.#peers.values()) {
      for (const [id, at] of p.heard) {
        if (now - at > this.#t.heardKeepMs && p.next !== Number.POSITIVE_INFINITY) {
          this.#o.sockets.closeSocket(id);
          p.heard.delete(id);
        }
      }
      let a = p.attempt;
      if (a !== undefined && now - a.startedAt >= this.#t.attemptMs) {
        this.#end(p, a, a.hit);
        a = undefined;
      }
      if (a === undefined) {
        const at = attemptStart(p.next, this.#t);
        if (at === undefined || now < p.seriesAt + at) continue;
        a = this.#begin(p, now);
        if (a === undefined) continue;
      }
      if (a.role === 'hard') this.#runHard(p, a, now);
      else this.#runEasy(p, a, now);
    }
  }

  #begin(p: PeerBirthday, now: number): Attempt | undefined {
    if (p.role === 'hard') {
      // The engine's socket bound is shared by all peers: a few attempts at a time, the rest wait.
      let running = 0;
      for (const q of this.#peers.values()) if (q.attempt?.role === 'hard') running++;
      if (running >= this.#t.maxConcurrentHard) return undefined;
    }
    const k = p.next++;
    const a: Attempt = {
      k,
      role: p.role,
      startedAt: now,
      nonce: randomBytes(8),
      sockets: new Map(),
      queue: [],
      rounds: 0,
      ports: [],
      sprayed: 0,
      held: 0,
      hit: false,
    };
    if (p.role === 'hard') {
      if (this.#hardTargets(p).length === 0) return undefined;
      for (let i = 0; i < this.#t.hardSockets; i++) {
        try {
          const s = this.#o.sockets.addSocket();
          a.sockets.set(s.id, s.port);
          this.counters.socketsOpened++;
        } catch (err) {
          this.counters.socketErrors++;
          this.#o.log.debug({ err: (err as Error).message }, 'birthday punch: no more sockets');
          break;
        }
      }
      if (a.sockets.size === 0) return undefined;
      this.counters.attemptsHard++;
    } else {
      if (this.#easyTargets(p).length === 0) return undefined;
      a.ports = distinctPorts(this.#t.sprayBudget);
      this.counters.attemptsEasy++;
    }
    p.attempt = a;
    this.#o.log.info(
      { peer: p.node, role: p.role, attempt: k, sockets: a.sockets.size || undefined },
      'birthday punch attempt',
    );
    return a;
  }

  #runHard(p: PeerBirthday, a: Attempt, now: number): void {
    if (a.queue.length === 0 && a.rounds < this.#t.hardRounds && now - a.startedAt >= a.rounds * this.#t.hardRoundMs) {
      a.rounds++;
      const targets = this.#hardTargets(p);
      for (const id of a.sockets.keys())
        for (const t of targets) a.queue.push({ socket: id, to: { ...t, socket: id } });
    }
    if (a.queue.length === 0) return;
    const got = this.#bucket.take(a.queue.length, now);
    this.#held(a, a.queue.length - got);
    for (const { socket, to } of a.queue.splice(0, got)) {
      if (!a.sockets.has(socket)) continue;
      if (this.#o.probe(p.node, to, a.nonce)) this.counters.probesSent++;
    }
  }

  #runEasy(p: PeerBirthday, a: Attempt, now: number): void {
    const ips = this.#easyTargets(p);
    const due = Math.min(sprayDue(now - a.startedAt, this.#t), a.ports.length) - a.sprayed;
    if (due <= 0 || a.hit) return;
    const got = this.#bucket.take(due, now);
    this.#held(a, due - got);
    for (let i = 0; i < got; i++) {
      const port = a.ports[a.sprayed]!;
      // Several public IPs (rare): the ports are shared out among them.
      const ip = ips[a.sprayed % ips.length]!;
      a.sprayed++;
      if (this.#o.probe(p.node, { ip, port }, a.nonce)) this.counters.probesSent++;
    }
  }

  // Probes still held after this tick; the ones held already at the last tick are not new.
  #held(a: Attempt, held: number): void {
    if (held > a.held) this.counters.rateLimited += held - a.held;
    a.held = held;
  }

  /** The easy side's mapping(s): its public candidates (at most two). */
  #hardTargets(p: PeerBirthday): UdpEndpoint[] {
    return p.candidates.filter((c) => isPublicIp(c.ip)).slice(0, 2);
  }

  /** The hard side's public IPs (at most two). */
  #easyTargets(p: PeerBirthday): string[] {
    return [...new Set(p.candidates.filter((c) => isPublicIp(c.ip)).map((c) => c.ip))].slice(0, 2);
  }

  #end(p: PeerBirthday, a: Attempt, hit: boolean, keep = 0): void {
    p.attempt = undefined;
    if (!hit) this.counters.unanswered++;
    // Sockets that heard nothing are of no use; the ones that did moved to p.heard (the one
    // the path uses too, should it not have been heard first).
    for (const id of a.sockets.keys()) {
      if (id === keep) p.heard.set(id, Date.now());
      else this.#o.sockets.closeSocket(id);
    }
    a.sockets.clear();
    a.queue.length = 0;
  }
}

/** The counters as metric events (edgemesh_udp_birthday_total{event}). */
export function birthdayEvents(c: BirthdayCounters | undefined): Record<string, number> | undefined {
  if (c === undefined) return undefined;
  return {
    'attempts-hard': c.attemptsHard,
    'attempts-easy': c.attemptsEasy,
    'probes-sent': c.probesSent,
    'rate-limited': c.rateLimited,
    'sockets-opened': c.socketsOpened,
    'socket-errors': c.socketErrors,
    hits: c.hits,
    unanswered: c.unanswered,
    superseded: c.superseded,
    'both-hard': c.bothHard,
    unvouched: c.unvouched,
  };
}
