// The relay node's TCP splice: the stream fallback's data path between two members that can
// reach each other only through a relay (docs/stream-relay.md). The relay hands each member
// of a pair a one-time random token over libp2p (overlay/splice-service.ts); both open a
// plain TCP connection to this listener and send the token first; the relay pairs the two
// sockets and pipes bytes 1:1. The members run noise end to end over the pipe, so the relay
// sees ciphertext only and does no crypto; `pipe()` pauses the reading side when the other
// side's buffer is full, so a fast sender is slowed to the slow receiver's pace (TCP
// backpressure end to end) and each splice holds at most a few highWaterMarks of memory.
//
// Everything arriving here is untrusted: a token that is unknown, expired or already used, a
// token from another address than the member it was issued to, a socket that sends nothing
// — all closed and counted. Every table is bounded.
import { randomBytes } from 'node:crypto';
import net from 'node:net';

export const SPLICE_TOKEN_BYTES = 32;

export interface SpliceLimits {
  /** Splices (pending or active) one member may hold at a time. */
  perMember: number;
  /** Splices (pending or active) the relay holds at a time. */
  total: number;
  /** Issued pairs whose sockets have not both arrived yet. */
  pending: number;
  /** How long an issued pair waits for its two sockets. */
  pendingMs: number;
  /** Accepted sockets that have not yet presented a token. */
  unpairedSockets: number;
  /** How long an accepted socket may take to send its token. */
  helloMs: number;
}

export const DEFAULT_SPLICE_LIMITS: SpliceLimits = {
  perMember: 32,
  total: 1024,
  pending: 256,
  pendingMs: 10_000,
  unpairedSockets: 256,
  helloMs: 5000,
};

/** Per-socket buffer bound in each direction (Node's readable and writable high water marks). */
export const SPLICE_HIGH_WATER_MARK = 64 * 1024;

export class SpliceError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'SpliceError';
    this.reason = reason;
  }
}

/** One member's side of an issued splice. */
export interface SpliceParty {
  peer: string;
  /** The address the member's libp2p connection comes from: its socket must come from there too. */
  ip?: string | undefined;
}

export interface SpliceCounters {
  /** Pairs issued (two tokens each). */
  issued: number;
  /** Pairs whose two sockets met (pipes started). */
  spliced: number;
  /** Pairs that expired before both sockets arrived. */
  expired: number;
  /** Sockets closed without a splice, by reason: bad-token, address-mismatch, hello-timeout, too-many-unpaired, ... */
  refused: Record<string, number>;
  /** Issue requests refused at a limit: relay-full, member-full, pending-full. */
  limited: Record<string, number>;
}

interface Splice {
  parties: [SpliceParty, SpliceParty];
  tokens: [string, string];
  sockets: [net.Socket | undefined, net.Socket | undefined];
  timer: NodeJS.Timeout | undefined;
  active: boolean;
  closed: boolean;
}

export class SpliceRelay {
  readonly counters: SpliceCounters = { issued: 0, spliced: 0, expired: 0, refused: {}, limited: {} };
  readonly #server: net.Server;
  readonly #limits: SpliceLimits;
  readonly #byToken = new Map<string, { splice: Splice; side: 0 | 1 }>();
  readonly #splices = new Set<Splice>();
  readonly #perMember = new Map<string, number>();
  readonly #unpaired = new Set<net.Socket>();
  #pending = 0;
  /** Bytes piped by splices already closed (active ones are read live). */
  #closedBytes = 0;
  #closed = false;

  private constructor(server: net.Server, limits: SpliceLimits) {
    this.#server = server;
    this.#limits = limits;
  }

  static async listen(opts: { host: string; port: number; limits?: Partial<SpliceLimits> }): Promise<SpliceRelay> {
    const server = net.createServer({ highWaterMark: SPLICE_HIGH_WATER_MARK, noDelay: true, pauseOnConnect: true });
    const relay = new SpliceRelay(server, { ...DEFAULT_SPLICE_LIMITS, ...opts.limits });
    server.on('connection', (socket) => relay.#accept(socket));
    server.on('error', () => {}); // after listen: per-accept errors (EMFILE) only; sockets stay ours
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.host, port: opts.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return relay;
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Splices whose sockets are piping now. */
  get active(): number {
    let n = 0;
    for (const s of this.#splices) if (s.active) n++;
    return n;
  }

  get pending(): number {
    return this.#pending;
  }

  /** Bytes piped in both directions, all splices since start. */
  get bytes(): number {
    let live = 0;
    for (const s of this.#splices)
      if (s.active) live += (s.sockets[0]?.bytesRead ?? 0) + (s.sockets[1]?.bytesRead ?? 0);
    return this.#closedBytes + live;
  }

  /** Bytes the relay holds in user space for all splices now (the bound the limits promise). */
  bufferedBytes(): number {
    let n = 0;
    for (const s of this.#splices)
      for (const sock of s.sockets) if (sock) n += sock.readableLength + sock.writableLength;
    return n;
  }

  /**
   * Issues a pair of one-time tokens for a splice between two members (the caller has checked
   * both are members). Throws SpliceError at a limit.
   */
  issue(a: SpliceParty, b: SpliceParty): [Uint8Array, Uint8Array] {
    if (this.#closed) throw new SpliceError('closed', 'splice relay closed');
    const limit = (reason: string, message: string) => {
      this.counters.limited[reason] = (this.counters.limited[reason] ?? 0) + 1;
      return new SpliceError(reason, message);
    };
    if (this.#splices.size >= this.#limits.total) throw limit('relay-full', 'the relay holds its maximum of splices');
    if (this.#pending >= this.#limits.pending) throw limit('pending-full', 'too many splices wait for their sockets');
    for (const p of [a, b])
      if ((this.#perMember.get(p.peer) ?? 0) >= this.#limits.perMember)
        throw limit('member-full', 'a member of the pair holds its maximum of splices');
    const tokens: [Uint8Array, Uint8Array] = [randomBytes(SPLICE_TOKEN_BYTES), randomBytes(SPLICE_TOKEN_BYTES)];
    const splice: Splice = {
      parties: [a, b],
      tokens: [Buffer.from(tokens[0]).toString('hex'), Buffer.from(tokens[1]).toString('hex')],
      sockets: [undefined, undefined],
      timer: undefined,
      active: false,
      closed: false,
    };
    splice.timer = setTimeout(() => {
      this.counters.expired++;
      this.#end(splice);
    }, this.#limits.pendingMs);
    splice.timer.unref();
    this.#splices.add(splice);
    this.#pending++;
    for (const p of [a, b]) this.#perMember.set(p.peer, (this.#perMember.get(p.peer) ?? 0) + 1);
    this.#byToken.set(splice.tokens[0], { splice, side: 0 });
    this.#byToken.set(splice.tokens[1], { splice, side: 1 });
    this.counters.issued++;
    return tokens;
  }

  /** Ends the pair a token belongs to (its offer failed): its slots are free at once. */
  revoke(token: Uint8Array): boolean {
    const entry = this.#byToken.get(Buffer.from(token).toString('hex'));
    if (entry === undefined) return false;
    this.#end(entry.splice);
    return true;
  }

  /** A member left the cluster: its splices end now. */
  dropMember(peer: string): number {
    let n = 0;
    for (const s of [...this.#splices]) {
      if (s.parties[0].peer !== peer && s.parties[1].peer !== peer) continue;
      this.#end(s);
      n++;
    }
    return n;
  }

  /** Splices (pending or active) a member holds now. */
  splicesOf(peer: string): number {
    return this.#perMember.get(peer) ?? 0;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#splices]) this.#end(s);
    for (const sock of this.#unpaired) sock.destroy();
    this.#unpaired.clear();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #refuse(socket: net.Socket, reason: string): void {
    this.counters.refused[reason] = (this.counters.refused[reason] ?? 0) + 1;
    this.#unpaired.delete(socket);
    socket.destroy();
  }

  #accept(socket: net.Socket): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    if (this.#unpaired.size >= this.#limits.unpairedSockets) {
      this.#refuse(socket, 'too-many-unpaired');
      return;
    }
    this.#unpaired.add(socket);
    socket.on('error', () => {});
    const timer = setTimeout(() => this.#refuse(socket, 'hello-timeout'), this.#limits.helloMs);
    timer.unref();
    let hello = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      hello = Buffer.concat([hello, chunk]);
      if (hello.length < SPLICE_TOKEN_BYTES) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      // Whatever followed the token (the noise handshake) is the peer's: back into the stream.
      if (hello.length > SPLICE_TOKEN_BYTES) socket.unshift(hello.subarray(SPLICE_TOKEN_BYTES));
      this.#present(socket, hello.subarray(0, SPLICE_TOKEN_BYTES).toString('hex'));
    };
    const onClose = () => {
      clearTimeout(timer);
      if (this.#unpaired.delete(socket))
        this.counters.refused['closed-early'] = (this.counters.refused['closed-early'] ?? 0) + 1;
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.resume();
  }

  #present(socket: net.Socket, token: string): void {
    const entry = this.#byToken.get(token);
    if (entry === undefined) {
      this.#refuse(socket, 'bad-token');
      return;
    }
    // One use only, whatever happens next.
    this.#byToken.delete(token);
    const { splice, side } = entry;
    const expected = splice.parties[side].ip;
    if (expected !== undefined && plainIp(socket.remoteAddress ?? '') !== plainIp(expected)) {
      this.#refuse(socket, 'address-mismatch');
      this.#end(splice); // the pair's secret leaked or the member moved: fail closed
      return;
    }
    this.#unpaired.delete(socket);
    splice.sockets[side] = socket;
    socket.once('close', () => this.#end(splice));
    const [a, b] = splice.sockets;
    if (a === undefined || b === undefined) return;
    clearTimeout(splice.timer);
    splice.active = true;
    this.#pending--;
    this.counters.spliced++;
    // pipe(): reading pauses while the other side's write buffer is above its high water mark.
    a.pipe(b);
    b.pipe(a);
    a.resume();
    b.resume();
  }

  #end(splice: Splice): void {
    if (splice.closed) return;
    splice.closed = true;
    clearTimeout(splice.timer);
    this.#splices.delete(splice);
    if (!splice.active) this.#pending--;
    for (const t of splice.tokens) this.#byToken.delete(t);
    for (const p of splice.parties) {
      const n = (this.#perMember.get(p.peer) ?? 1) - 1;
      if (n <= 0) this.#perMember.delete(p.peer);
      else this.#perMember.set(p.peer, n);
    }
    for (const sock of splice.sockets) {
      if (sock === undefined) continue;
      if (splice.active) this.#closedBytes += sock.bytesRead;
      sock.destroy();
    }
  }
}

/** An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as plain IPv4. */
function plainIp(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}
