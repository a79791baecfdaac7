// Reflection (STUN-like, authenticated): public nodes tell members which ip:port their data
// socket's datagrams arrive from, so a node behind a NAT learns its mapping, offers it to its
// peers as a candidate and knows what kind of NAT it sits behind (overlay/nat-kind.ts).
//
// Requests and answers are sealed control messages inside a UDP session with the reflector
// (set up over libp2p like any other session): only a member holding the session's keys can
// ask, the answer cannot be forged on the way, and a datagram outside a session (a stranger's
// request) is dropped by the native socket before it reaches us (unknown index). A reflector
// answers each member at most REQUESTS_PER_WINDOW times per window, and counts the rest.
//
// Wire (inside the session's AEAD, same header as overlay/udp-paths.ts's control messages):
//   0..1 'E' 'M'  2 version 1  3 type (5 = binding request, 6 = binding answer)  4..11 nonce
//   answer only: 12 family (4 | 6)  13..14 port (big-endian)  15.. address (4 or 16 bytes)
import { randomBytes } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { classifyNat, type NatKind, type NatSelf, offerableMappings, type Reflection } from './nat-kind.ts';
import type { DataSocketLike, UdpEndpoint } from './udp-types.ts';
import { endpointKey } from './udp-types.ts';

const MAGIC0 = 0x45;
const MAGIC1 = 0x4d;
const VERSION = 1;
export const BindingType = { Request: 5, Answer: 6 } as const;
const HEADER = 12;

export type BindingMessage =
  | { type: 'request'; nonce: Uint8Array }
  | { type: 'answer'; nonce: Uint8Array; mapped: UdpEndpoint };

/** Whether a control message is ours (binding request or answer), well-formed or not. */
export function isBindingMessage(m: Uint8Array): boolean {
  return (
    m.length >= 4 &&
    m[0] === MAGIC0 &&
    m[1] === MAGIC1 &&
    m[2] === VERSION &&
    (m[3] === BindingType.Request || m[3] === BindingType.Answer)
  );
}

function header(type: number, nonce: Uint8Array, extra: number): Uint8Array {
  const m = new Uint8Array(HEADER + extra);
  m[0] = MAGIC0;
  m[1] = MAGIC1;
  m[2] = VERSION;
  m[3] = type;
  m.set(nonce.subarray(0, 8), 4);
  return m;
}

export function encodeBindingRequest(nonce: Uint8Array): Uint8Array {
  return header(BindingType.Request, nonce, 0);
}

export function encodeBindingAnswer(nonce: Uint8Array, mapped: UdpEndpoint): Uint8Array {
  const addr = ipaddr.parse(mapped.ip);
  const bytes = addr.toByteArray();
  const m = header(BindingType.Answer, nonce, 3 + bytes.length);
  m[12] = addr.kind() === 'ipv6' ? 6 : 4;
  m[13] = mapped.port >> 8;
  m[14] = mapped.port & 0xff;
  m.set(bytes, 15);
  return m;
}

/** Undefined for anything malformed (wrong length, family, port 0...). */
export function decodeBinding(m: Uint8Array): BindingMessage | undefined {
  if (!isBindingMessage(m) || m.length < HEADER) return undefined;
  const nonce = m.slice(4, 12);
  if (m[3] === BindingType.Request) return m.length === HEADER ? { type: 'request', nonce } : undefined;
  const family = m[12];
  const len = family === 4 ? 4 : family === 6 ? 16 : 0;
  if (len === 0 || m.length !== HEADER + 3 + len) return undefined;
  const port = (m[13]! << 8) | m[14]!;
  if (port === 0) return undefined;
  const ip = ipaddr.fromByteArray([...m.subarray(15, 15 + len)]).toString();
  return { type: 'answer', nonce, mapped: { ip, port } };
}

export interface ReflectionCounters {
  /** Binding requests we sent to reflectors. */
  requestsSent: number;
  /** Answers that matched a request of ours. */
  answers: number;
  /** Rounds of asking (start, timer, address change, ...). */
  rounds: number;
  /** Our mapping (or NAT kind) changed between rounds. */
  mappingChanges: number;
  /** As a reflector: requests answered. */
  answered: number;
  /** As a reflector: requests over a member's rate limit, not answered. */
  rateLimited: number;
  /** Requests that reached a node without a public address (it reflects nothing). */
  refusedNotPublic: number;
  /** Authentic but malformed messages, answers we did not ask for, messages on no session. */
  bad: number;
}

export interface NatReflectionOptions {
  socket: DataSocketLike;
  /** The node a receiver index belongs to. */
  nodeOf: (localIndex: number) => string | undefined;
  /** We announce a public address: we reflect, and need no reflection. */
  selfPublic: () => boolean;
  /** Reflector nodes to ask, best first (public members, not us). */
  reflectors: () => string[];
  /** A UDP session with the reflector (set up over libp2p when there is none). */
  ensureSession: (node: string) => Promise<unknown>;
  /** The session index to send on to a node, once a session exists. */
  txIndexOf: (node: string) => number | undefined;
  /** Where to send a request to a reflector: its confirmed endpoint, else its public candidates. */
  targetsOf: (node: string) => UdpEndpoint[];
  /** Addresses on our interfaces (an address change starts a new round). */
  localIps: () => Set<string>;
  /** Our mapping or NAT kind changed (not called for the first round's result if nothing was known). */
  onChange: (kind: NatKind, mappings: UdpEndpoint[]) => void;
  log: Logger;
  /** Ask again this often (default 60 s). */
  refreshMs?: number;
  /** A round that left reflectors unanswered is retried after this (default 10 s). */
  retryMs?: number;
  /** How long one reflector has to answer a round (default 3 s, requests resent every 300 ms). */
  answerTimeoutMs?: number;
  /** Reflectors asked per round (default 3; at least two are needed to classify). */
  maxReflectors?: number;
  /** Reflector side: requests answered per member per window (default 10 per 10 s). */
  requestsPerWindow?: number;
  windowMs?: number;
}

const RESEND_MS = 300;
const MAX_PENDING = 64;

export class NatReflection {
  readonly counters: ReflectionCounters = {
    requestsSent: 0,
    answers: 0,
    rounds: 0,
    mappingChanges: 0,
    answered: 0,
    rateLimited: 0,
    refusedNotPublic: 0,
    bad: 0,
  };
  readonly #o: NatReflectionOptions;
  readonly #pending = new Map<string, { node: string; resolve: (mapped: UdpEndpoint) => void }>();
  readonly #asked = new Map<string, number[]>();
  #reflections: Reflection[] = [];
  #kind: NatKind = 'unknown';
  #round: Promise<void> | undefined;
  #lastRoundAt = 0;
  #lastComplete = false;
  #lastAsked = 0;
  #ipsKey = '';
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #firstRound: Promise<void> | undefined;

  constructor(opts: NatReflectionOptions) {
    this.#o = opts;
  }

  /** Starts the first round and the timer (rounds on schedule and on address change). */
  start(): void {
    this.#ipsKey = [...this.#o.localIps()].sort().join(',');
    this.#firstRound = this.refresh();
    this.#timer = setInterval(() => this.#tick(), 1000);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const p of this.#pending.values()) p.resolve({ ip: '', port: 0 });
    this.#pending.clear();
  }

  get kind(): NatKind {
    return this.#o.selfPublic() ? 'none' : this.#kind;
  }

  reflections(): Reflection[] {
    return this.#reflections.map((r) => ({ ...r, mapped: { ...r.mapped } }));
  }

  /** Reflected mappings to offer peers as candidates. */
  candidates(): UdpEndpoint[] {
    return this.#o.selfPublic() ? [] : offerableMappings(this.#kind, this.#reflections);
  }

  /** Resolves when the first round is over (answered or timed out); bounded by `ms`. */
  async firstRound(ms: number): Promise<void> {
    if (this.#firstRound === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#firstRound, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  /** One round: asks every reflector (at most maxReflectors) and classifies the answers. */
  refresh(): Promise<void> {
    if (this.#round !== undefined) return this.#round;
    this.#round = this.#runRound().finally(() => {
      this.#round = undefined;
    });
    return this.#round;
  }

  /** A binding request or answer that arrived sealed on session `localIndex`. */
  onMessage(localIndex: number, message: Uint8Array, from: UdpEndpoint): void {
    const node = this.#o.nodeOf(localIndex);
    const msg = decodeBinding(message);
    if (node === undefined || msg === undefined) {
      this.counters.bad++;
      return;
    }
    if (msg.type === 'request') {
      this.#answer(node, localIndex, msg.nonce, from);
      return;
    }
    const key = Buffer.from(msg.nonce).toString('hex');
    const pending = this.#pending.get(key);
    if (pending === undefined || pending.node !== node) {
      this.counters.bad++;
      return;
    }
    this.#pending.delete(key);
    this.counters.answers++;
    pending.resolve(msg.mapped);
  }

  #answer(node: string, localIndex: number, nonce: Uint8Array, from: UdpEndpoint): void {
    if (!this.#o.selfPublic()) {
      this.counters.refusedNotPublic++;
      return;
    }
    const now = Date.now();
    const windowMs = this.#o.windowMs ?? 10_000;
    const recent = (this.#asked.get(node) ?? []).filter((t) => now - t < windowMs);
    if (recent.length >= (this.#o.requestsPerWindow ?? 10)) {
      this.#asked.set(node, recent);
      this.counters.rateLimited++;
      return;
    }
    recent.push(now);
    this.#asked.set(node, recent);
    // Bounded: one entry per member that asked in the last window.
    if (this.#asked.size > 4096)
      for (const [n, ts] of this.#asked) if (ts.every((t) => now - t >= windowMs)) this.#asked.delete(n);
    try {
      if (this.#o.socket.sendControl(localIndex, encodeBindingAnswer(nonce, from), from)) this.counters.answered++;
    } catch {
      this.counters.bad++;
    }
  }

  async #runRound(): Promise<void> {
    if (this.#stopped || this.#o.selfPublic()) return;
    this.counters.rounds++;
    this.#lastRoundAt = Date.now();
    const reflectors = this.#o.reflectors().slice(0, this.#o.maxReflectors ?? 3);
    this.#lastAsked = reflectors.length;
    const answers = await Promise.all(reflectors.map((node) => this.#ask(node)));
    if (this.#stopped) return;
    const now = Date.now();
    const fresh: Reflection[] = [];
    answers.forEach((mapped, i) => {
      if (mapped !== undefined) fresh.push({ reflector: reflectors[i]!, mapped, at: now });
    });
    this.#lastComplete = reflectors.length > 0 && fresh.length === reflectors.length;
    // No answer at all (UDP blocked for a while, reflectors restarting): keep what we knew.
    if (fresh.length === 0) return;
    const before = { kind: this.#kind, key: mappingKey(this.#reflections) };
    this.#reflections = fresh;
    this.#kind = classifyNat(this.#self(), fresh);
    const after = { kind: this.#kind, key: mappingKey(fresh) };
    if (before.kind !== after.kind || before.key !== after.key) {
      this.counters.mappingChanges++;
      this.#o.log.info(
        { nat: after.kind, mappings: fresh.map((r) => `${r.reflector}=${endpointKey(r.mapped)}`) },
        'reflected UDP mapping',
      );
      this.#o.onChange(after.kind, this.candidates());
    }
  }

  /** Our mapping as `node` sees it, or undefined when it did not answer in time. */
  async #ask(node: string): Promise<UdpEndpoint | undefined> {
    const deadline = Date.now() + (this.#o.answerTimeoutMs ?? 3000);
    try {
      await Promise.race([this.#o.ensureSession(node), sleep(deadline - Date.now())]);
    } catch {
      return undefined;
    }
    const { promise, resolve } = Promise.withResolvers<UdpEndpoint | undefined>();
    const nonces: string[] = [];
    let done = false;
    const settle = (v: UdpEndpoint | undefined) => {
      if (done) return;
      done = true;
      for (const n of nonces) this.#pending.delete(n);
      resolve(v);
    };
    const send = () => {
      if (done || this.#stopped) return;
      const index = this.#o.txIndexOf(node);
      if (index === undefined) return;
      const nonce = randomBytes(8);
      const key = nonce.toString('hex');
      if (this.#pending.size >= MAX_PENDING) return;
      this.#pending.set(key, { node, resolve: (m) => settle(m.port === 0 ? undefined : m) });
      nonces.push(key);
      const msg = encodeBindingRequest(nonce);
      for (const to of this.#o.targetsOf(node).slice(0, 4)) {
        try {
          if (this.#o.socket.sendControl(index, msg, to)) this.counters.requestsSent++;
        } catch {
          // an address family our socket cannot reach: another target may do
        }
      }
    };
    send();
    const resend = setInterval(send, RESEND_MS);
    const timeout = setTimeout(() => settle(undefined), Math.max(0, deadline - Date.now()));
    try {
      return await promise;
    } finally {
      clearInterval(resend);
      clearTimeout(timeout);
    }
  }

  #tick(): void {
    if (this.#stopped || this.#round !== undefined) return;
    const now = Date.now();
    const key = [...this.#o.localIps()].sort().join(',');
    const addressesChanged = key !== this.#ipsKey;
    this.#ipsKey = key;
    const due =
      now - this.#lastRoundAt >= (this.#lastComplete ? (this.#o.refreshMs ?? 60_000) : (this.#o.retryMs ?? 10_000));
    // Reflectors we did not know at the last round (the directory was still filling): now.
    const newReflectors = this.#reflections.length === 0 && this.#lastAsked === 0 && this.#o.reflectors().length > 0;
    if (addressesChanged || due || newReflectors) void this.refresh();
  }

  #self(): NatSelf {
    return { public: this.#o.selfPublic(), port: this.#o.socket.port, localIps: this.#o.localIps() };
  }
}

/** The distinct mappings (which reflector saw which does not matter to peers). */
function mappingKey(rs: readonly Reflection[]): string {
  return [...new Set(rs.map((r) => endpointKey(r.mapped)))].sort().join(',');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, ms)).unref());
}
