// /edgemesh/udp-relay/1.0.0: how a member gets its half of a UDP relay binding
// (dataplane/udp-relay.ts) from a relay node, over the member's authenticated libp2p
// connection. The requester is who the connection says it is (noise + the membership gate):
// it asks for a binding with one other cluster member and gets back only its own side —
// binding id, side, its 32-byte token, the relay's UDP port. The other member asks the same
// relay for the same pair and gets the other side of the same binding. Asking again returns
// the same grant (the requester already holds its token), so a restarted request loop is
// harmless; "release" drops the binding for both.
//
// One length-prefixed JSON message each way, at most MAX_MESSAGE bytes: anything longer,
// not JSON, of the wrong shape, or late closes the stream and is counted.
import type { Connection, Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import type { Logger } from 'pino';
import { withDeadline } from './deadline.ts';

/** One member's side of a binding (dataplane/udp-relay.ts's RelayGrant). */
export interface RelayGrant {
  bindingId: number;
  member: 0 | 1;
  token: Uint8Array;
  port: number;
  peer: string;
}

/**
 * What this protocol needs of the relay (dataplane/udp-relay.ts's UdpRelay): kept structural
 * so the overlay does not depend on the native addon; the agent hands it the real one.
 * addBinding throws an error with `code` 'relay-full' or 'member-full' at a cap.
 */
export interface RelayLike {
  readonly closed: boolean;
  addBinding(a: string, b: string): [RelayGrant, RelayGrant];
  removeBinding(id: number): boolean;
  removeMember(member: string): number;
  sweepIdle(maxIdleMs: number): number[];
  members(id: number): readonly [string, string] | undefined;
  bindingsOf(member: string): number[];
  grant(id: number, member: string): RelayGrant | undefined;
}

export const RELAY_BINDING_PROTOCOL = '/edgemesh/udp-relay/1.0.0';
const MAX_MESSAGE = 512;
const PEER_ID_MAX = 128;
const REQUEST_TIMEOUT_MS = 5000;

export interface RelayBindingRequest {
  v: 1;
  op: 'bind' | 'release';
  /** The other member's peer ID. */
  peer: string;
}

type RelayBindingReply =
  | { v: 1; bindingId: number; member: 0 | 1; token: string; port: number }
  | { v: 1; released: boolean }
  | { v: 1; error: string };

export interface RelayBindingCounters {
  granted: number;
  released: number;
  /** Bindings removed because both members went quiet. */
  expired: number;
  /** Requests refused or broken, by reason: not-member, unknown-peer, bad-message, timeout, relay-full, member-full, ... */
  refused: Record<string, number>;
}

export class RelayBindingError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'RelayBindingError';
    this.reason = reason;
  }
}

function parseRequest(bytes: Uint8Array): RelayBindingRequest {
  let msg: unknown;
  try {
    msg = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new RelayBindingError('bad-message', 'request is not JSON');
  }
  const m = msg as Partial<RelayBindingRequest> | null;
  if (
    typeof m !== 'object' ||
    m === null ||
    m.v !== 1 ||
    (m.op !== 'bind' && m.op !== 'release') ||
    typeof m.peer !== 'string' ||
    m.peer.length === 0 ||
    m.peer.length > PEER_ID_MAX
  )
    throw new RelayBindingError('bad-message', 'request has the wrong shape');
  return { v: 1, op: m.op, peer: m.peer };
}

/**
 * The relay's answer, checked like any input from another node: whatever it sends, the
 * result is a grant, a release, or a RelayBindingError with a reason (never a TypeError
 * from a `null` or a string where an object was expected).
 */
export function parseReply(bytes: Uint8Array, peer: string): RelayGrant | { released: boolean } {
  let reply: unknown;
  try {
    reply = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new RelayBindingError('bad-message', 'the relay sent no JSON');
  }
  if (typeof reply !== 'object' || reply === null || Array.isArray(reply)) {
    throw new RelayBindingError('bad-message', 'the relay sent no object');
  }
  const r = reply as Partial<Record<'error' | 'released' | 'bindingId' | 'member' | 'token' | 'port', unknown>>;
  if ('error' in r) throw new RelayBindingError(String(r.error).slice(0, 64), 'the relay refused the binding');
  if ('released' in r) return { released: r.released === true };
  const token = typeof r.token === 'string' ? Buffer.from(r.token, 'base64') : Buffer.alloc(0);
  const { bindingId, member, port } = r;
  if (
    typeof bindingId !== 'number' ||
    !Number.isInteger(bindingId) ||
    bindingId < 1 ||
    bindingId > 0xffffffff ||
    (member !== 0 && member !== 1) ||
    token.length !== 32 ||
    typeof port !== 'number' ||
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535
  )
    throw new RelayBindingError('bad-message', 'the relay sent a malformed grant');
  return { bindingId, member, token: new Uint8Array(token), port, peer };
}

export interface RelayBindingServiceOptions {
  relay: RelayLike;
  /** Whether a peer ID belongs to a cluster member (the directory). */
  isMember(peerId: string): boolean;
  log: Logger;
  /** How long a requester may take to send its request (default 5 s). */
  requestTimeoutMs?: number;
  /** Bindings idle this long (neither member sent anything) are removed with their tokens (default 10 min). */
  idleMs?: number;
}

/** The relay node's side: serves grants for its UdpRelay. */
export class RelayBindingService {
  readonly counters: RelayBindingCounters = { granted: 0, released: 0, expired: 0, refused: {} };
  readonly #o: RelayBindingServiceOptions;

  #sweep: NodeJS.Timeout | undefined;

  constructor(opts: RelayBindingServiceOptions) {
    this.#o = opts;
  }

  /** Starts expiring idle bindings (checked every idleMs / 4). */
  start(): void {
    const idleMs = this.#o.idleMs ?? 600_000;
    this.#sweep ??= setInterval(
      () => {
        const gone = this.#o.relay.closed ? [] : this.#o.relay.sweepIdle(idleMs);
        this.counters.expired += gone.length;
      },
      Math.max(10, idleMs / 4),
    );
    this.#sweep.unref();
  }

  stop(): void {
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  /** The protocol handler: `host.handle(RELAY_BINDING_PROTOCOL, (s, c) => service.serve(s, c.remotePeer.toString()))`. */
  async serve(stream: Stream, remotePeer: string): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE });
    try {
      if (!this.#o.isMember(remotePeer)) throw new RelayBindingError('not-member', 'not a cluster member');
      const raw = await withDeadline(
        this.#o.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
        'relay binding request',
        (signal) => lp.read({ signal }),
      ).catch((err: Error) => {
        if (err instanceof RelayBindingError) throw err;
        throw new RelayBindingError(
          err.name === 'InvalidDataLengthError' || err.name === 'InvalidDataLengthLengthError'
            ? 'bad-message'
            : err.name === 'TimeoutError' || err.name === 'AbortError' || /timed out|abort/i.test(err.message)
              ? 'timeout'
              : 'stream-error',
          err.message,
        );
      });
      const req = parseRequest(raw.subarray());
      if (req.peer === remotePeer || !this.#o.isMember(req.peer))
        throw new RelayBindingError('unknown-peer', 'the other peer is not a cluster member');
      const reply = this.#answer(remotePeer, req);
      await lp.write(new TextEncoder().encode(JSON.stringify(reply)));
      await stream.close();
    } catch (err) {
      const reason = err instanceof RelayBindingError ? err.reason : 'error';
      this.counters.refused[reason] = (this.counters.refused[reason] ?? 0) + 1;
      this.#o.log.debug({ peer: remotePeer, reason, err: (err as Error).message }, 'relay binding request refused');
      // Refusals the requester can act on get an answer; broken or hostile streams are cut.
      if (
        stream.status === 'open' &&
        (reason === 'unknown-peer' || reason.endsWith('-full') || reason === 'not-member')
      ) {
        try {
          await lp.write(new TextEncoder().encode(JSON.stringify({ v: 1, error: reason })));
          await stream.close();
          return;
        } catch {
          // fall through to abort
        }
      }
      stream.abort(err as Error);
    }
  }

  #answer(remote: string, req: RelayBindingRequest): RelayBindingReply {
    const relay = this.#o.relay;
    const existing = relay.bindingsOf(remote).find((id) => relay.members(id)?.includes(req.peer));
    if (req.op === 'release') {
      const released = existing !== undefined && relay.removeBinding(existing);
      if (released) this.counters.released++;
      return { v: 1, released };
    }
    let grant: RelayGrant;
    try {
      grant =
        existing !== undefined ? this.#grantOf(existing, remote) : pick(relay.addBinding(remote, req.peer), remote);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'relay-full' || code === 'member-full') throw new RelayBindingError(code, (err as Error).message);
      throw err;
    }
    this.counters.granted++;
    return {
      v: 1,
      bindingId: grant.bindingId,
      member: grant.member,
      token: Buffer.from(grant.token).toString('base64'),
      port: grant.port,
    };
  }

  #grantOf(id: number, remote: string): RelayGrant {
    const g = this.#o.relay.grant(id, remote);
    if (!g) throw new RelayBindingError('error', 'binding vanished');
    return g;
  }

  /** A member left the cluster (or the directory dropped it): its bindings and tokens go. */
  forgetMember(peerId: string): number {
    return this.#o.relay.removeMember(peerId);
  }
}

function pick(grants: [RelayGrant, RelayGrant], remote: string): RelayGrant {
  return grants[0].peer === remote ? grants[1] : grants[0];
}

/** The member's side: asks the relay on `conn` for its half of the binding with `peer`. */
export async function requestRelayBinding(
  conn: Connection,
  peer: string,
  opts: { op?: 'bind' | 'release'; timeoutMs?: number } = {},
): Promise<RelayGrant | { released: boolean }> {
  const timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
  return withDeadline(timeoutMs, 'relay binding', async (signal) => {
    const stream = await conn.newStream(RELAY_BINDING_PROTOCOL, { signal, runOnLimitedConnection: true });
    const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE });
    try {
      const req: RelayBindingRequest = { v: 1, op: opts.op ?? 'bind', peer };
      await lp.write(new TextEncoder().encode(JSON.stringify(req)), { signal });
      const reply = parseReply((await lp.read({ signal })).subarray(), peer);
      void stream.close().catch(() => {});
      return reply;
    } catch (err) {
      stream.abort(err as Error);
      throw err;
    }
  });
}
