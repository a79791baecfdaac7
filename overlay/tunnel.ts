// The tunnel protocol /edgemesh/tunnel/2.0.0: one long-lived libp2p stream per peer and
// path carrying the forwarder's frames.
//
// Wire format: each side first sends a 6-byte hello ("EMT", version, capability flags,
// reserved), then frames exactly as PeerLink.send got them (dataplane/frame-codec.ts). The
// reader cuts the stream at the frame header's own length (checked, and bounded, before
// the body is buffered), so it hands the forwarder whole frames only: frames from two
// streams of one peer (relayed and direct during a path switch) never interleave mid-frame
// in the forwarder's per-peer decoder. Version 1 wrapped each frame in a second u32 length.
//
// Frames are coalesced: frames accepted during one event-loop turn go out as one stream
// write (flushed from setImmediate, right after the poll phase that read the TUN). Every
// stream write costs a yamux frame, a noise message and several socket writes whatever its
// size: one write per small frame capped a tunnel of MTU-sized packets at ~0.1 Gbit/s.
import type { Connection, Stream } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import { DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_LEN, readFrameHeader } from '../dataplane/frame-codec.ts';
import { isCircuit } from './addresses.ts';

export const TUNNEL_PROTOCOL = '/edgemesh/tunnel/2.0.0';
export const TUNNEL_VERSION = 2;
const HELLO_LEN = 6;
const MAGIC = [0x45, 0x4d, 0x54]; // "EMT"
const FLAG_OFFLOAD = 0x01;
/** Frames copied into one stream write at most (a bigger single frame goes alone, uncopied). */
const WRITE_BATCH_BYTES = 256 * 1024;

export interface TunnelCaps {
  /** Both ends carry GSO super-packets with vnet headers. */
  offload: boolean;
}

export class TunnelProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TunnelProtocolError';
  }
}

export function encodeHello(caps: TunnelCaps, version = TUNNEL_VERSION): Uint8Array {
  return Uint8Array.of(...MAGIC, version, caps.offload ? FLAG_OFFLOAD : 0, 0);
}

export function decodeHello(bytes: Uint8Array): { version: number; caps: TunnelCaps } {
  if (bytes.length < HELLO_LEN || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new TunnelProtocolError('not an edgemesh tunnel hello');
  }
  return { version: bytes[3]!, caps: { offload: (bytes[4]! & FLAG_OFFLOAD) !== 0 } };
}

/** Capabilities both ends agree on: a feature is used only when both announce it. */
export function negotiate(local: TunnelCaps, remote: { version: number; caps: TunnelCaps }): TunnelCaps {
  if (remote.version !== TUNNEL_VERSION) {
    throw new TunnelProtocolError(`peer speaks tunnel version ${remote.version}, we speak ${TUNNEL_VERSION}`);
  }
  return { offload: local.offload && remote.caps.offload };
}

export interface TunnelStreamOptions {
  stream: Stream;
  connection: Connection;
  localCaps: TunnelCaps;
  /** One whole frame from the peer (header checked, body not). Throwing (FrameError) resets the stream. */
  onFrame: (frame: Uint8Array) => void;
  onClose: (tunnel: TunnelStream, err?: Error) => void;
  /**
   * Evidence that the path works: bytes arrived, or our queued bytes drained (the peer
   * granted window for them). Under bulk load a keepalive echo can queue behind megabytes
   * of data; progress must still count as life.
   */
  onProgress?: () => void;
  /** Bound of frames queued while the stream waits for 'drain'. */
  maxQueueBytes?: number;
  /** The connection runs over a relay's TCP splice (overlay/splice-client.ts): relayed, not direct. */
  spliced?: boolean;
  /** Largest frame accepted from the peer (default: the forwarder's); larger = garbage, the stream is reset. */
  maxFrameBytes?: number;
}

/** One tunnel stream: handshake, bounded send queue with 'drain' backpressure, frame reader. */
export class TunnelStream {
  readonly stream: Stream;
  readonly connection: Connection;
  readonly direct: boolean;
  readonly spliced: boolean;
  readonly ready: Promise<TunnelCaps>;
  caps: TunnelCaps | undefined;
  txBytes = 0;
  rxBytes = 0;
  txFrames = 0;
  rxFrames = 0;
  drops = 0;
  /** Frame headers the reader refused (garbage, oversized): each resets the stream. */
  badFrames = 0;
  lastActivity = Date.now();
  closed = false;

  readonly #opts: TunnelStreamOptions;
  readonly #maxQueueBytes: number;
  readonly #maxFrameBytes: number;
  readonly #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #waitingForDrain = false;
  #flushScheduled = false;
  readonly #rx = new Uint8ArrayList();
  #helloSeen = false;
  readonly #readyResolvers = Promise.withResolvers<TunnelCaps>();

  constructor(opts: TunnelStreamOptions) {
    this.#opts = opts;
    this.stream = opts.stream;
    this.connection = opts.connection;
    this.spliced = opts.spliced === true;
    this.direct = !this.spliced && !isCircuit(opts.connection.remoteAddr);
    this.#maxQueueBytes = opts.maxQueueBytes ?? 8 * 1024 * 1024;
    this.#maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.ready = this.#readyResolvers.promise;
    // Nobody may be waiting on `ready` when a stream dies early: avoid an unhandled rejection.
    this.ready.catch(() => {});
    this.stream.addEventListener('message', (evt) => this.#onMessage(evt.data));
    this.stream.addEventListener('drain', () => {
      this.#opts.onProgress?.();
      this.#waitingForDrain = false;
      this.#flush();
    });
    this.stream.addEventListener('close', (evt) => this.#closed(evt.error));
    this.#write(encodeHello(opts.localCaps));
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /**
   * PeerLink.send: false = dropped because the bounded queue is full (or the stream died).
   * The frame is written at the end of this event-loop turn together with the others.
   */
  send(frame: Uint8Array): boolean {
    if (this.closed) return false;
    // An empty queue takes any frame, so that one frame above the bound is never unsendable.
    if (this.#queue.length > 0 && this.#queuedBytes + frame.length > this.#maxQueueBytes) {
      this.drops++;
      return false;
    }
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
    if (!this.#waitingForDrain && !this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
    return true;
  }

  /** Resets the stream (garbage from the peer, dead path): the peer sees a reset, not EOF. */
  abort(err: Error): void {
    if (this.closed) return;
    this.stream.abort(err);
    this.#closed(err);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.#flush();
    try {
      await this.stream.close({ signal: AbortSignal.timeout(2000) });
    } catch (err) {
      this.stream.abort(err as Error);
    }
    this.#closed();
  }

  /** Writes `frames` in one stream write: one copy, then one yamux/noise message per 64 KiB. */
  #writeFrames(frames: Uint8Array[], bytes: number): boolean {
    let data: Uint8Array;
    if (frames.length === 1) {
      data = frames[0]!;
    } else {
      data = new Uint8Array(bytes);
      let offset = 0;
      for (const f of frames) {
        data.set(f, offset);
        offset += f.length;
      }
    }
    if (!this.#write(data)) return false;
    this.txBytes += bytes;
    this.txFrames += frames.length;
    return true;
  }

  #write(data: Uint8Array | Uint8ArrayList): boolean {
    try {
      // send() returning false still accepted the data: wait for the 'drain' *event*
      // (onDrain() resolves at once after the first drain in @libp2p/utils 7.4).
      if (!this.stream.send(data)) this.#waitingForDrain = true;
      this.lastActivity = Date.now();
      return true;
    } catch (err) {
      this.abort(err as Error);
      return false;
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    while (this.#queue.length > 0 && !this.#waitingForDrain && !this.closed) {
      let n = 0;
      let bytes = 0;
      while (n < this.#queue.length) {
        const add = this.#queue[n]!.length;
        if (n > 0 && bytes + add > WRITE_BATCH_BYTES) break;
        bytes += add;
        n++;
      }
      const frames = this.#queue.splice(0, n);
      this.#queuedBytes -= bytes;
      this.#writeFrames(frames, bytes);
    }
  }

  #onMessage(data: Uint8Array | Uint8ArrayList): void {
    if (this.closed) return;
    this.#rx.append(data);
    this.lastActivity = Date.now();
    this.#opts.onProgress?.();
    try {
      if (!this.#helloSeen) {
        if (this.#rx.byteLength < HELLO_LEN) return;
        const hello = decodeHello(this.#rx.subarray(0, HELLO_LEN));
        this.#rx.consume(HELLO_LEN);
        this.caps = negotiate(this.#opts.localCaps, hello);
        this.#helloSeen = true;
        this.#readyResolvers.resolve(this.caps);
      }
      while (this.#rx.byteLength >= FRAME_HEADER_LEN) {
        let len: number;
        try {
          len = readFrameHeader(this.#rx.subarray(0, FRAME_HEADER_LEN), 0, this.#maxFrameBytes);
        } catch (err) {
          this.badFrames++;
          throw err;
        }
        if (this.#rx.byteLength < len) return;
        const frame = this.#rx.subarray(0, len);
        this.#rx.consume(len);
        this.rxBytes += len;
        this.rxFrames++;
        this.#opts.onFrame(frame);
      }
    } catch (err) {
      this.abort(err as Error);
    }
  }

  #closed(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#readyResolvers.reject(err ?? new TunnelProtocolError('tunnel stream closed before the handshake'));
    this.#opts.onClose(this, err);
  }
}
