// Finds and watches the UDP path of every peer session: probes each candidate endpoint with
// sealed control messages (only the peer holds the keys, so a reply is authentic), adopts
// the first endpoint that answers, keeps it alive with keepalives well below the NATs' UDP
// timeout, notices when it stops answering, and runs the path ladder (overlay/path-ladder.ts)
// to move traffic between UDP and the stream tunnel. A probe that arrives from an address we
// did not know (the peer's NAT mapping) becomes a candidate too: that is what lets two NAT'd
// nodes punch with nothing but their observed public IPs.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { BIRTHDAY_TUNING, type BirthdayTuning, birthdayRole, bothHard } from './birthday-plan.ts';
import { type BirthdayCounters, BirthdayPunch, type BirthdaySockets } from './birthday-punch.ts';
import {
  classifyUdpPath,
  DEFAULT_TUNING,
  initialLadder,
  type LadderState,
  type LadderTuning,
  stepLadder,
  type TransportMode,
  type UdpFacts,
  type UdpPathKind,
  udpAlive,
} from './path-ladder.ts';
import type { UdpRelayPath } from './udp-relay-path.ts';
import type { ActiveSession } from './udp-sessions.ts';
import { type DataSocketLike, endpointKey, type UdpEndpoint } from './udp-types.ts';

const MAGIC0 = 0x45; // 'E'
const MAGIC1 = 0x4d; // 'M'
const CONTROL_VERSION = 1;
export const CONTROL_LEN = 12;
export const ControlType = {
  Probe: 1,
  ProbeReply: 2,
  Keepalive: 3,
  KeepaliveReply: 4,
} as const;
export type ControlType = (typeof ControlType)[keyof typeof ControlType];

export function encodeControl(type: ControlType, nonce: Uint8Array): Uint8Array {
  const m = new Uint8Array(CONTROL_LEN);
  m[0] = MAGIC0;
  m[1] = MAGIC1;
  m[2] = CONTROL_VERSION;
  m[3] = type;
  m.set(nonce.subarray(0, 8), 4);
  return m;
}

export function decodeControl(m: Uint8Array): { type: ControlType; nonce: Uint8Array } | undefined {
  if (m.length !== CONTROL_LEN || m[0] !== MAGIC0 || m[1] !== MAGIC1 || m[2] !== CONTROL_VERSION) return undefined;
  const type = m[3]!;
  if (type < ControlType.Probe || type > ControlType.KeepaliveReply) return undefined;
  return { type: type as ControlType, nonce: m.slice(4, 12) };
}

export interface UdpPathCounters {
  probesSent: number;
  probeReplies: number;
  keepalivesSent: number;
  /** Control messages that opened (authentic) but make no sense, or for no known session. */
  badControl: number;
  sendErrors: number;
  /** Carrier switches UDP ↔ stream. */
  switches: number;
  /** Probe bursts started towards a peer without a working UDP path (new session, path lost). */
  attempts: number;
  /** Attempts that ended with an authenticated reply from the peer itself (a direct path is up). */
  successes: number;
  /**
   * Attempts that did not, by reason (unanswered: a whole burst without a reply; relayed: the
   * first reply came through a UDP relay, so the path is up but nothing was punched).
   */
  failures: Record<string, number>;
  /** Birthday punching through an endpoint-dependent NAT (absent: the socket has no extra sockets). */
  birthday?: BirthdayCounters;
}

export interface UdpPathsOptions {
  socket: DataSocketLike;
  /** The node a receiver index belongs to (current or retiring session). */
  nodeOf: (localIndex: number) => string | undefined;
  mode: () => TransportMode;
  /** Whether we / the peer have a public address (for udp-direct vs udp-punched). */
  publicness: (node: string) => { self: boolean; peer: boolean };
  log: Logger;
  /** The carrier or the visible UDP path of a node changed. */
  onChange: (node: string) => void;
  /**
   * The session's candidates got no reply for a whole probe burst: a new handshake offers
   * fresh candidates (our public address may not have been known at the first one).
   */
  onUnanswered?: (node: string) => void;
  /** At most one onUnanswered per node per this period. */
  renewAfterMs?: number;
  probeIntervalMs?: number;
  /** Fast probing lasts this long after a session starts or UDP dies; then every slowProbeMs. */
  probeBurstMs?: number;
  slowProbeMs?: number;
  /**
   * While the session runs through a relay, the relays are probed this often (the direct
   * candidates only every slowProbeMs): a relay that dies must be noticed, and the other one
   * seen answering, well before the path's liveness (deadAfterMs) gives up on UDP.
   */
  relayProbeMs?: number;
  keepaliveMs?: number;
  /** A responder's new session takes over sending once the peer used it, or after this long. */
  txSwitchMs?: number;
  tuning?: LadderTuning;
  /** Whether the node's stream tunnel is up (the ladder skips its hold-down when it is not). */
  streamUp?: (node: string) => boolean;
  /**
   * The public IP a relay sees the peer's libp2p connection come from (undefined: none
   * vouches). Birthday spraying aims only there.
   */
  vouchedIp?: (node: string) => Promise<string | undefined>;
  /** The udp-relayed rung (overlay/udp-relay-path.ts); absent: no UDP relays. */
  relay?: Pick<
    UdpRelayPath,
    | 'isRelay'
    | 'targets'
    | 'unanswered'
    | 'bothHard'
    | 'sessionEstablished'
    | 'preferDirect'
    | 'lost'
    | 'tick'
    | 'observe'
    | 'shouldMove'
  >;
  /**
   * Birthday punching (overlay/birthday-punch.ts) when one side's NAT is endpoint-dependent:
   * runs when the socket can open extra sockets, unless false. A tuning: for tests.
   */
  birthday?: boolean | BirthdayTuning;
}

const MAX_NONCES = 256;
/** Relay probe cadence while on a relay (UdpPathsOptions.relayProbeMs). */
export const RELAY_PROBE_MS = 500;
const MAX_LEARNED = 4;

interface PeerUdp {
  node: string;
  session: ActiveSession;
  txIndex: number;
  pendingTx: { index: number; since: number } | undefined;
  endpoint: UdpEndpoint | undefined;
  confirmedAt: number | undefined;
  /**
   * Last reply to one of our probes or keepalives: a round trip, so both directions work.
   * Data or probes from the peer alone do not count (UDP may be blocked one way only).
   */
  lastAckAt: number | undefined;
  kind: UdpPathKind;
  ladder: LadderState;
  probingSince: number;
  lastProbeAt: number;
  lastRelayProbeAt: number;
  lastKeepaliveAt: number;
  nonces: Map<string, number>;
  /** Addresses the peer's probes came from (its NAT mappings), newest last. */
  learned: UdpEndpoint[];
  lastRenewAt: number;
  /** When the first session with this peer was set up (kept across rekeys). */
  startedAt: number;
  /** Milliseconds from startedAt to the first confirmed UDP path, undefined until then. */
  msToDirect: number | undefined;
  /** An attempt (probe burst without a working path) is under way and not yet judged. */
  attempting: boolean;
}

export class UdpPaths {
  readonly counters: UdpPathCounters = {
    probesSent: 0,
    probeReplies: 0,
    keepalivesSent: 0,
    badControl: 0,
    sendErrors: 0,
    switches: 0,
    attempts: 0,
    successes: 0,
    failures: {},
  };
  readonly #o: UdpPathsOptions;
  readonly #peers = new Map<string, PeerUdp>();
  readonly #tuning: LadderTuning;
  readonly #timer: NodeJS.Timeout;
  readonly birthday: BirthdayPunch | undefined;

  constructor(opts: UdpPathsOptions) {
    this.#o = opts;
    this.#tuning = opts.tuning ?? DEFAULT_TUNING;
    const sockets = opts.socket as DataSocketLike & Partial<BirthdaySockets>;
    this.birthday =
      opts.birthday === false || sockets.addSocket === undefined || sockets.closeSocket === undefined
        ? undefined
        : new BirthdayPunch({
            sockets: { addSocket: () => sockets.addSocket!(), closeSocket: (id) => sockets.closeSocket!(id) },
            probe: (node, to, nonce) => {
              const p = this.#peers.get(node);
              if (p === undefined) return false;
              this.counters.probesSent++;
              return this.#sendRaw(p.txIndex, encodeControl(ControlType.Probe, nonce), to);
            },
            log: opts.log,
            tuning: typeof opts.birthday === 'object' ? opts.birthday : BIRTHDAY_TUNING,
          });
    if (this.birthday !== undefined) this.counters.birthday = this.birthday.counters;
    this.#timer = setInterval(() => this.tick(Date.now()), opts.probeIntervalMs ?? 100);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.birthday?.stop();
    this.#peers.clear();
  }

  /** A new session (first one or a rekey) for `s.node`. */
  sessionEstablished(s: ActiveSession): void {
    // The relay must know the new index before anything is sent on it.
    this.#o.relay?.sessionEstablished(s);
    // Two endpoint-dependent NATs: no punch opens a path between them (birthday probing needs
    // one easy side), so the relays are asked now rather than after a whole unanswered burst.
    if (bothHard(s.selfNat, s.peerNat)) this.#o.relay?.bothHard(s.node);
    const now = Date.now();
    const pub = this.#o.publicness(s.node);
    const existing = this.#peers.get(s.node);
    if (existing === undefined) {
      this.#peers.set(s.node, {
        node: s.node,
        session: s,
        txIndex: s.localIndex,
        pendingTx: undefined,
        endpoint: undefined,
        confirmedAt: undefined,
        lastAckAt: undefined,
        kind: classifyUdpPath(pub.self, pub.peer),
        ladder: initialLadder(now),
        probingSince: now,
        lastProbeAt: 0,
        lastRelayProbeAt: 0,
        lastKeepaliveAt: 0,
        nonces: new Map(),
        learned: [],
        lastRenewAt: now,
        startedAt: now,
        msToDirect: undefined,
        attempting: true,
      });
      this.counters.attempts++;
      this.#startBirthday(s, now);
      this.tick(now);
      return;
    }
    existing.session = s;
    existing.kind = classifyUdpPath(pub.self, pub.peer);
    // A new session while the pair is not direct (none yet, relayed, or dead): both sides
    // see it at about the same moment, so it (re)starts birthday attempts in step.
    if (existing.endpoint === undefined || this.#onRelay(existing) || !udpAlive(this.facts(s.node), now, this.#tuning))
      this.#startBirthday(s, now);
    if (existing.endpoint !== undefined) {
      // A rekey on a proven path: same endpoint, new keys.
      this.#setEndpoint(s.localIndex, existing.endpoint);
      if (s.initiator) {
        existing.txIndex = s.localIndex;
        existing.pendingTx = undefined;
        // Tells the responder at once that we moved (it switches when it hears us on it).
        this.#send(existing, s.localIndex, ControlType.Keepalive, existing.endpoint);
      } else {
        // The initiator installs its half only when our answer arrives: keep sending on the
        // old session until it speaks on the new one.
        existing.pendingTx = { index: s.localIndex, since: now };
      }
    } else {
      existing.txIndex = s.localIndex;
      existing.pendingTx = undefined;
      existing.probingSince = now;
      if (!existing.attempting) {
        existing.attempting = true;
        this.counters.attempts++;
      }
    }
  }

  /** The peer's sessions are gone: UDP cannot carry its traffic. */
  sessionLost(node: string): void {
    this.#o.relay?.lost(node);
    this.birthday?.lost(node);
    if (this.#peers.delete(node)) this.#o.onChange(node);
  }

  facts(node: string): UdpFacts | undefined {
    const p = this.#peers.get(node);
    if (p === undefined) return undefined;
    const relayed = p.endpoint !== undefined && this.#o.relay?.isRelay(p.endpoint) === true;
    return { confirmedAt: p.confirmedAt, lastRxAt: p.lastAckAt, kind: relayed ? 'udp-relayed' : p.kind };
  }

  /** Whether the node's UDP path answers now (a recent round trip). */
  alive(node: string, now: number): boolean {
    return udpAlive(this.facts(node), now, this.#tuning);
  }

  /** Milliseconds from the first session with the node to its first working UDP path. */
  msToDirect(node: string): number | undefined {
    return this.#peers.get(node)?.msToDirect;
  }

  ladder(node: string): LadderState | undefined {
    return this.#peers.get(node)?.ladder;
  }

  /** The session index to send a node's packets on when UDP carries them. */
  txIndex(node: string): number | undefined {
    return this.#peers.get(node)?.txIndex;
  }

  /**
   * True when UDP should carry this node's traffic now. Pinned to UDP, that is whenever a
   * session exists: packets without a working endpoint are dropped and counted by the
   * socket rather than sent on the stream the operator ruled out.
   */
  carries(node: string): boolean {
    const p = this.#peers.get(node);
    if (p === undefined) return false;
    if (this.#o.mode() === 'udp') return true;
    return p.ladder.carrier === 'udp' && p.endpoint !== undefined;
  }

  endpointOf(node: string): UdpEndpoint | undefined {
    return this.#peers.get(node)?.endpoint;
  }

  /** Probe the node's candidates at the next tick (a relay just registered us). */
  probeSoon(node: string): void {
    const p = this.#peers.get(node);
    if (p !== undefined) p.lastProbeAt = 0;
  }

  /** Authentic data arrived on `localIndex` (the socket opened it): the peer uses that session. */
  onData(localIndex: number): void {
    const node = this.#o.nodeOf(localIndex);
    const p = node === undefined ? undefined : this.#peers.get(node);
    if (p !== undefined) this.#maybeSwitchTx(p, localIndex);
  }

  onControl(localIndex: number, message: Uint8Array, from: UdpEndpoint): void {
    const now = Date.now();
    const node = this.#o.nodeOf(localIndex);
    const p = node === undefined ? undefined : this.#peers.get(node);
    const msg = decodeControl(message);
    if (p === undefined || msg === undefined) {
      this.counters.badControl++;
      return;
    }
    this.#maybeSwitchTx(p, localIndex);
    // Authentic and on one of the birthday sockets: that socket's mapping works.
    if (from.socket !== undefined && from.socket !== 0) this.birthday?.heard(p.node, from.socket, now);
    switch (msg.type) {
      case ControlType.Probe:
        this.#sendRaw(localIndex, encodeControl(ControlType.ProbeReply, msg.nonce), from);
        // Until a path is confirmed (or while it is dead), where the peer's probe came from is
        // worth probing back: its NAT mapping towards us (which may not be what the peer
        // thinks its address is, e.g. after its NAT remapped the port).
        if (
          (p.endpoint === undefined ||
            !udpAlive(this.facts(p.node), now, this.#tuning) ||
            !sameEndpoint(p.endpoint, from)) &&
          !p.learned.some((e) => sameEndpoint(e, from))
        ) {
          p.learned.push({ ...from });
          if (p.learned.length > MAX_LEARNED) p.learned.shift();
          this.#send(p, p.txIndex, ControlType.Probe, from);
        }
        return;
      case ControlType.ProbeReply:
      case ControlType.KeepaliveReply: {
        const key = Buffer.from(msg.nonce).toString('hex');
        const sentAt = p.nonces.get(key);
        if (!p.nonces.delete(key)) {
          // Birthday probes of an attempt share one nonce (thousands of them, one answer).
          if (msg.type !== ControlType.ProbeReply || this.birthday?.isNonce(p.node, msg.nonce) !== true) {
            this.counters.badControl++;
            return;
          }
          this.birthday.answered(p.node);
        }
        if (msg.type === ControlType.ProbeReply) this.counters.probeReplies++;
        this.#adopt(p, from, now, sentAt === undefined ? undefined : now - sentAt);
        return;
      }
      case ControlType.Keepalive:
        this.#sendRaw(localIndex, encodeControl(ControlType.KeepaliveReply, msg.nonce), from);
        return;
    }
  }

  /** Runs probing, keepalives and the ladder; exported for tests that drive the clock. */
  tick(now: number): void {
    const mode = this.#o.mode();
    for (const p of this.#peers.values()) {
      this.#checkPendingRx(p);
      if (p.pendingTx !== undefined && now - p.pendingTx.since >= (this.#o.txSwitchMs ?? 1000)) {
        p.txIndex = p.pendingTx.index;
        p.pendingTx = undefined;
      }
      const alive = udpAlive(this.facts(p.node), now, this.#tuning);
      if (mode !== 'stream') {
        // Through a relay, the direct candidates keep being probed (slowly): direct is better.
        if (!alive || this.#onRelay(p)) this.#probe(p, now);
        else if (p.endpoint !== undefined && now - p.lastKeepaliveAt >= (this.#o.keepaliveMs ?? 1000)) {
          p.lastKeepaliveAt = now;
          this.counters.keepalivesSent++;
          this.#send(p, p.txIndex, ControlType.Keepalive, p.endpoint);
        }
      }
      const before = p.ladder;
      const streamUp = this.#o.streamUp?.(p.node);
      p.ladder = stepLadder(
        before,
        { mode, udp: this.facts(p.node), now, ...(streamUp === undefined ? {} : { streamUp }) },
        this.#tuning,
      );
      if (p.ladder.carrier !== before.carrier) {
        this.counters.switches++;
        this.#o.log.info(
          { peer: p.node, from: before.carrier, to: p.ladder.carrier, endpoint: p.endpoint },
          'traffic carrier changed',
        );
        this.#o.onChange(p.node);
      }
    }
    this.#o.relay?.tick(now);
    this.birthday?.tick(now);
  }

  #startBirthday(s: ActiveSession, now: number): void {
    const b = this.birthday;
    if (b === undefined) return;
    if (bothHard(s.selfNat, s.peerNat)) b.noteBothHard();
    const role = birthdayRole(s.selfNat, s.peerNat);
    const vouch = this.#o.vouchedIp;
    if (role !== 'easy' || vouch === undefined) {
      b.start(s.node, role, s.candidates, now);
      return;
    }
    // The easy side sprays thousands of probes at one IP: only at the address a relay sees
    // the peer connect from, which the peer cannot choose (its announced addresses it can).
    // The series keeps `now` as its start, so it stays in step with the peer's.
    void vouch(s.node)
      .catch(() => undefined)
      .then((ip) => {
        if (this.#peers.get(s.node)?.session !== s) return; // a newer session started its own series
        const candidates = s.candidates.filter((c) => c.ip === ip);
        if (candidates.length === 0) b.noteUnvouched();
        b.start(s.node, candidates.length === 0 ? undefined : role, candidates, now);
      });
  }

  #onRelay(p: PeerUdp): boolean {
    return p.endpoint !== undefined && this.#o.relay?.isRelay(p.endpoint) === true;
  }

  // The socket counts what it opened: the peer already sends on our pending session.
  #checkPendingRx(p: PeerUdp): void {
    const idx = p.pendingTx?.index;
    if (idx === undefined) return;
    const age = this.#o.socket.session(idx)?.lastRxAgeMs;
    if (age !== undefined && age >= 0) this.#maybeSwitchTx(p, idx);
  }

  #probe(p: PeerUdp, now: number): void {
    const fast = now - p.probingSince < (this.#o.probeBurstMs ?? 5000);
    if (!fast && p.attempting) {
      // A whole burst without a reply: this attempt failed (the slow probes go on).
      p.attempting = false;
      this.counters.failures.unanswered = (this.counters.failures.unanswered ?? 0) + 1;
    }
    if (!fast && p.confirmedAt === undefined && now - p.lastRenewAt >= (this.#o.renewAfterMs ?? 15_000)) {
      p.lastRenewAt = now;
      this.#o.onUnanswered?.(p.node);
    }
    if (!fast && !udpAlive(this.facts(p.node), now, this.#tuning)) this.#o.relay?.unanswered(p.node);
    const interval = fast ? (this.#o.probeIntervalMs ?? 100) : (this.#o.slowProbeMs ?? 2000);
    const relays = this.#o.relay?.targets(p.node) ?? [];
    let targets: UdpEndpoint[];
    if (now - p.lastProbeAt >= interval) {
      p.lastProbeAt = now;
      targets = [...p.session.candidates, ...p.learned, ...relays];
    } else if (this.#onRelay(p) && now - p.lastRelayProbeAt >= (this.#o.relayProbeMs ?? RELAY_PROBE_MS)) {
      // Between the slow rounds, only the relays: they carry the traffic (and its failover).
      targets = [...relays];
    } else return;
    p.lastRelayProbeAt = now;
    if (p.endpoint !== undefined && !targets.some((t) => sameEndpoint(t, p.endpoint!))) targets.push(p.endpoint);
    for (const to of targets) {
      this.counters.probesSent++;
      this.#send(p, p.txIndex, ControlType.Probe, to);
    }
  }

  #adopt(p: PeerUdp, from: UdpEndpoint, now: number, rttMs?: number): void {
    const wasAlive = udpAlive(this.facts(p.node), now, this.#tuning);
    const same = p.endpoint !== undefined && sameEndpoint(p.endpoint, from);
    // First authenticated reply wins; a live path is not moved by a late reply on another,
    // except off a relay by a direct endpoint that keeps answering, or to another relay
    // that is clearly faster or still answers when ours went silent (the relay rung decides).
    const relay = this.#o.relay;
    const viaRelay = relay?.isRelay(from) === true;
    if (viaRelay) relay!.observe(p.node, from, rttMs, now, p.endpoint);
    if (relay !== undefined && !same && wasAlive && this.#onRelay(p)) {
      if (viaRelay ? !relay.shouldMove(p.node, p.endpoint!, from, now) : !relay.preferDirect(p.node)) return;
    } else if (!same && wasAlive && p.confirmedAt !== undefined) return;
    if (!same) {
      p.endpoint = { ...from };
      this.#setEndpoint(p.session.localIndex, p.endpoint);
      if (p.pendingTx !== undefined && p.pendingTx.index !== p.session.localIndex) {
        this.#setEndpoint(p.pendingTx.index, p.endpoint);
      }
      if (p.txIndex !== p.session.localIndex) this.#setEndpoint(p.txIndex, p.endpoint);
      this.#o.log.info(
        { peer: p.node, endpoint: endpointKey(from), ...(from.socket ? { socket: from.socket } : {}) },
        'UDP path confirmed',
      );
      if (!viaRelay) this.birthday?.adopted(p.node, from);
    }
    if (!wasAlive || p.confirmedAt === undefined) {
      if (p.msToDirect === undefined) p.msToDirect = now - p.startedAt;
      // An attempt that ends on a relay got a path, but no punch: counted as such.
      if (p.attempting && viaRelay) this.counters.failures.relayed = (this.counters.failures.relayed ?? 0) + 1;
      else if (p.attempting) this.counters.successes++;
      p.attempting = false;
      p.confirmedAt = now;
      p.learned = [];
      this.#o.onChange(p.node);
    }
    p.lastAckAt = now;
  }

  #maybeSwitchTx(p: PeerUdp, localIndex: number): void {
    if (p.pendingTx?.index === localIndex) {
      p.txIndex = localIndex;
      p.pendingTx = undefined;
    }
  }

  #setEndpoint(localIndex: number, ep: UdpEndpoint): void {
    try {
      this.#o.socket.setEndpoint(localIndex, ep);
    } catch (err) {
      this.counters.sendErrors++;
      this.#o.log.debug({ localIndex, err: (err as Error).message }, 'setEndpoint failed');
    }
  }

  #send(p: PeerUdp, localIndex: number, type: ControlType, to: UdpEndpoint): void {
    const nonce = randomBytes(8);
    if (type === ControlType.Probe || type === ControlType.Keepalive) {
      p.nonces.set(nonce.toString('hex'), Date.now());
      if (p.nonces.size > MAX_NONCES) p.nonces.delete(p.nonces.keys().next().value!);
    }
    this.#sendRaw(localIndex, encodeControl(type, nonce), to);
  }

  #sendRaw(localIndex: number, message: Uint8Array, to: UdpEndpoint): boolean {
    try {
      if (this.#o.socket.sendControl(localIndex, message, to)) return true;
      this.counters.sendErrors++;
    } catch {
      // e.g. an IPv6 candidate on an IPv4-only socket: that candidate just cannot be used.
      this.counters.sendErrors++;
    }
    return false;
  }
}

/** Same address, port and local socket (a birthday socket's path is not the main socket's). */
function sameEndpoint(a: UdpEndpoint, b: UdpEndpoint): boolean {
  return a.port === b.port && a.ip === b.ip && (a.socket ?? 0) === (b.socket ?? 0);
}
