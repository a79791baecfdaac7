// /edgemesh/session/1.0.0: sets up a UDP data session over the peer's libp2p connection
// (direct or relayed). The initiator sends `hello` (its ephemeral X25519 key, its receiver
// index, the AEAD it runs, its candidate UDP endpoints); the responder installs the session
// and answers `accept` with its own, or `reject`. One exchange per stream; a message that is
// too long, not JSON or not well-formed closes the stream and is counted by the caller.
import type { Connection, Stream } from '@libp2p/interface';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { withDeadline } from './deadline.ts';
import { JsonLineReader, sendJsonLine } from './json-lines.ts';
import { NAT_KINDS, type NatKind } from './nat-kind.ts';
import { isIndex, X25519_KEY_BYTES } from './session-keys.ts';
import type { UdpEndpoint } from './udp-types.ts';

export const SESSION_PROTOCOL = '/edgemesh/session/1.0.0';
/** A hello with 16 IPv6 endpoints is about 1.3 KiB; anything past this is hostile. */
export const MAX_SESSION_MESSAGE = 2048;
export const MAX_CANDIDATES = 16;
export const HANDSHAKE_TIMEOUT_MS = 5000;

export class SessionProtocolError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'SessionProtocolError';
    this.reason = reason;
  }
}

const b64Key = z
  .string()
  .max(64)
  .transform((s, ctx) => {
    const bytes = Buffer.from(s, 'base64');
    if (bytes.length !== X25519_KEY_BYTES || bytes.toString('base64') !== s) {
      ctx.addIssue({ code: 'custom', message: 'ephemeral key must be 32 bytes of base64' });
      return z.NEVER;
    }
    return new Uint8Array(bytes);
  });

const endpoint = z.object({
  ip: z
    .string()
    .max(45)
    .refine((ip) => isUsableCandidateIp(ip), { message: 'not a usable unicast address' }),
  port: z.number().int().min(1).max(65_535),
});

const offer = {
  v: z.literal(1),
  eph: b64Key,
  idx: z.number().refine(isIndex, { message: 'receiver index must be a non-zero u32' }),
  cipher: z.string().min(1).max(32),
  eps: z.array(endpoint).max(MAX_CANDIDATES),
  // The sender's NAT kind (overlay/nat-kind.ts): both sides pick their birthday punching role
  // from the pair. Optional: older peers do not send it.
  nat: z.enum(NAT_KINDS).optional(),
};

// Fields this version does not know are dropped, not refused: a newer agent may add optional
// fields (as `nat` was added) and must still set up sessions with older ones during a rolling
// upgrade. The message is size-bounded before parsing, so extra fields cost nothing.
const helloSchema = z.object({ ...offer, t: z.literal('hello') });
const answerSchema = z.discriminatedUnion('t', [
  z.object({ ...offer, t: z.literal('accept') }),
  z.object({ v: z.literal(1), t: z.literal('reject'), reason: z.string().max(200) }),
]);

export interface SessionOffer {
  ephemeral: Uint8Array;
  index: number;
  cipher: string;
  endpoints: UdpEndpoint[];
  /** What the sender's reflection says of its NAT. */
  nat?: NatKind;
}

export type SessionAnswer = ({ accepted: true } & SessionOffer) | { accepted: false; reason: string };

/**
 * Candidate addresses a peer may offer: unicast, routable somewhere. Loopback, unspecified,
 * multicast and broadcast would aim our probes at ourselves or at many hosts; link-local
 * needs a zone we cannot know.
 */
export function isUsableCandidateIp(ip: string): boolean {
  if (!ipaddr.isValid(ip)) return false;
  const parsed = ipaddr.parse(ip);
  // ipaddr.js accepts legacy forms ("10.1", "0xa.0.0.1"); only canonical text is accepted.
  if (parsed.toString() !== ip && parsed.toNormalizedString() !== ip) return false;
  const range = parsed.range();
  return !['unspecified', 'broadcast', 'multicast', 'linkLocal', 'loopback', 'ipv4Mapped'].includes(range);
}

function toWire(t: 'hello' | 'accept', o: SessionOffer): object {
  return {
    v: 1,
    t,
    eph: Buffer.from(o.ephemeral).toString('base64'),
    idx: o.index,
    cipher: o.cipher,
    eps: o.endpoints.slice(0, MAX_CANDIDATES).map((e) => ({ ip: e.ip, port: e.port })),
    ...(o.nat === undefined ? {} : { nat: o.nat }),
  };
}

function fromWire(o: {
  eph: Uint8Array;
  idx: number;
  cipher: string;
  eps: UdpEndpoint[];
  nat?: NatKind | undefined;
}): SessionOffer {
  return {
    ephemeral: o.eph,
    index: o.idx,
    cipher: o.cipher,
    endpoints: dedupe(o.eps),
    ...(o.nat === undefined ? {} : { nat: o.nat }),
  };
}

function dedupe(eps: UdpEndpoint[]): UdpEndpoint[] {
  const seen = new Set<string>();
  return eps.filter((e) => {
    const k = `${e.ip}|${e.port}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** A peer's hello, checked; a malformed one is a SessionProtocolError('bad-message'). */
export function parseSessionHello(raw: unknown): SessionOffer {
  const parsed = helloSchema.safeParse(raw);
  if (!parsed.success) throw new SessionProtocolError('bad-message', 'malformed session hello');
  return fromWire(parsed.data);
}

/** A peer's answer to our hello, checked the same way. */
export function parseSessionAnswer(raw: unknown): SessionAnswer {
  const parsed = answerSchema.safeParse(raw);
  if (!parsed.success) throw new SessionProtocolError('bad-message', 'malformed session answer');
  const answer = parsed.data;
  if (answer.t === 'reject') return { accepted: false, reason: answer.reason };
  return { accepted: true, ...fromWire(answer) };
}

const protocolFailure = (reason: string, message: string) => new SessionProtocolError(reason, message);

/** Initiator: sends our offer on a new stream and waits for the answer. */
export async function initiateSession(conn: Connection, own: SessionOffer): Promise<SessionAnswer> {
  const stream = await withDeadline(HANDSHAKE_TIMEOUT_MS, 'session stream', (signal) =>
    conn.newStream(SESSION_PROTOCOL, { runOnLimitedConnection: true, signal }),
  );
  try {
    const reader = new JsonLineReader(stream, MAX_SESSION_MESSAGE, protocolFailure);
    sendJsonLine(stream, toWire('hello', own));
    const raw = await reader.next(HANDSHAKE_TIMEOUT_MS);
    return parseSessionAnswer(raw);
  } catch (err) {
    stream.abort(err as Error);
    throw err;
  } finally {
    if (stream.status === 'open') void stream.close().catch(() => {});
  }
}

/**
 * Responder: reads the peer's offer and answers with what `decide` returns (our offer, or a
 * refusal). `decide` may install the session before the answer leaves, so the initiator's
 * first probe finds it. Never throws: failures close the stream and come back as a reason.
 */
export async function respondSession(
  stream: Stream,
  decide: (offer: SessionOffer) => Promise<SessionOffer | { reject: string }>,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const reader = new JsonLineReader(stream, MAX_SESSION_MESSAGE, protocolFailure);
    const raw = await reader.next(HANDSHAKE_TIMEOUT_MS);
    const result = await decide(parseSessionHello(raw));
    if ('reject' in result) {
      sendJsonLine(stream, { v: 1, t: 'reject', reason: result.reject.slice(0, 200) });
      await stream.close();
      return { ok: false, reason: 'rejected' };
    }
    sendJsonLine(stream, toWire('accept', result));
    await stream.close();
    return { ok: true };
  } catch (err) {
    stream.abort(err as Error);
    return { ok: false, reason: err instanceof SessionProtocolError ? err.reason : 'error' };
  }
}
