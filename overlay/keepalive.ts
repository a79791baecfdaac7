// Path liveness: /edgemesh/keepalive/1.0.0 is one long-lived stream per connection on
// which the prober sends an 8-byte sequence number every interval and the other side
// echoes it. No echo for `deadAfterMs` = the path is dead (a DROP rule, NAT state lost):
// TCP would take minutes to notice, the tunnel must fall back to the relay in seconds.
import type { Connection, Libp2p, Stream } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import { withDeadline } from './deadline.ts';
import { rawConnectionOf } from './libp2p-internals.ts';

export const KEEPALIVE_PROTOCOL = '/edgemesh/keepalive/1.0.0';
const PROBE_LEN = 8;
const MAX_PENDING_ECHO = 64 * PROBE_LEN;

/** Answers probes: echoes bytes back, bounded so a misbehaving peer cannot queue unboundedly. */
export function handleKeepalive(host: Libp2p): Promise<void> {
  return host.handle(
    KEEPALIVE_PROTOCOL,
    (stream) => {
      stream.addEventListener('message', (evt) => {
        if (evt.data.byteLength > MAX_PENDING_ECHO || stream.writeBufferLength > MAX_PENDING_ECHO) {
          stream.abort(new Error('keepalive flood'));
          return;
        }
        try {
          stream.send(evt.data);
        } catch {
          // stream closing: nothing to answer
        }
      });
    },
    { runOnLimitedConnection: true, maxInboundStreams: 2 },
  );
}

export class ConnectionProbe {
  readonly connection: Connection;
  rttMs: number | undefined;
  #stream: Stream | undefined;
  #opening = false;
  #seq = 0;
  #lastEcho = Date.now();
  readonly #sent = new Map<number, number>();
  readonly #rx = new Uint8ArrayList();

  readonly #onRawTraffic = () => this.noteTraffic();
  readonly #raw: EventTarget | undefined;

  constructor(connection: Connection) {
    this.connection = connection;
    // Any byte from the peer, or our socket draining, proves the path works. Under bulk
    // load an echo can queue behind seconds of data (and a CPU-starved event loop), so
    // echoes alone would condemn busy healthy paths.
    this.#raw = rawConnectionOf(connection);
    this.#raw?.addEventListener('message', this.#onRawTraffic);
    this.#raw?.addEventListener('drain', this.#onRawTraffic);
  }

  /** Sends one probe; returns false when the path has been silent for longer than deadAfterMs. */
  tick(deadAfterMs: number): boolean {
    if (Date.now() - this.#lastEcho > deadAfterMs) return false;
    if (this.#stream === undefined) {
      this.#open();
      return true;
    }
    const seq = ++this.#seq;
    const probe = new Uint8Array(PROBE_LEN);
    new DataView(probe.buffer).setBigUint64(0, BigInt(seq));
    this.#sent.set(seq, Date.now());
    // Keep only recent probes: bounded whatever the peer does.
    if (this.#sent.size > 32) this.#sent.delete(this.#sent.keys().next().value!);
    try {
      this.#stream.send(probe);
    } catch {
      this.#stream = undefined;
    }
    return true;
  }

  /** Data received on this connection also proves the path is alive. */
  noteTraffic(): void {
    this.#lastEcho = Date.now();
  }

  close(): void {
    this.#raw?.removeEventListener('message', this.#onRawTraffic);
    this.#raw?.removeEventListener('drain', this.#onRawTraffic);
    this.#stream?.abort(new Error('probe closed'));
    this.#stream = undefined;
  }

  #open(): void {
    if (this.#opening) return;
    this.#opening = true;
    withDeadline(5000, 'keepalive stream', (signal) =>
      this.connection.newStream(KEEPALIVE_PROTOCOL, { runOnLimitedConnection: true, signal }),
    )
      .then((stream) => {
        this.#stream = stream;
        this.#lastEcho = Date.now();
        stream.addEventListener('message', (evt) => this.#onEcho(evt.data));
        stream.addEventListener('close', () => {
          if (this.#stream === stream) this.#stream = undefined;
        });
      })
      .catch(() => {
        // no stream = no echoes: the dead-path clock keeps running
      })
      .finally(() => {
        this.#opening = false;
      });
  }

  #onEcho(data: Uint8Array | Uint8ArrayList): void {
    this.#rx.append(data);
    while (this.#rx.byteLength >= PROBE_LEN) {
      const seq = Number(this.#rx.getBigUint64(0));
      this.#rx.consume(PROBE_LEN);
      const sentAt = this.#sent.get(seq);
      if (sentAt === undefined) continue;
      this.#sent.delete(seq);
      this.rttMs = Date.now() - sentAt;
      this.#lastEcho = Date.now();
    }
  }
}
