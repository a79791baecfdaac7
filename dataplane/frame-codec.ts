// The tunnel stream format between two forwarders. A stream carries frames; a frame
// carries a batch of packets, each with its vnet header, so one socket/stream write moves
// a whole TUN batch (and GSO super-packets cross whole: the stream has no MTU).
//
//   frame header (12 bytes, big-endian):
//     u16 magic 0x454d ("EM") · u8 version (1) · u8 flags (0) · u32 packet count · u32 frame length
//   then per packet:
//     u16 vnet header length · u32 data length · vnet bytes · data bytes
//
// The frame length counts every byte including the header, so a decoder knows how much to
// wait for before it looks inside, and can refuse an oversized frame before buffering it.
import type { Packet } from './types.ts';

export const FRAME_MAGIC = 0x454d;
export const FRAME_VERSION = 1;
export const FRAME_HEADER_LEN = 12;
export const PACKET_HEADER_LEN = 6;
/** Largest vnet header a frame may carry (virtio_net_hdr_v1_hash is 20 bytes). */
export const MAX_VNET_LEN = 64;
/** Default bound on one frame: a TUN batch of super-packets fits, a runaway peer does not. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;

/** The stream is not speaking this format (or is oversized): the caller resets that stream. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Bytes encodeFrame() will produce for `packets`. */
export function encodedFrameLength(packets: readonly Packet[]): number {
  let length = FRAME_HEADER_LEN;
  for (const p of packets) length += PACKET_HEADER_LEN + p.vnet.length + p.data.length;
  return length;
}

/** Encodes a batch into one buffer (one write per batch). */
export function encodeFrame(packets: readonly Packet[]): Uint8Array {
  if (packets.length === 0) throw new RangeError('a frame carries at least one packet');
  const length = encodedFrameLength(packets);
  // Every byte is written below, so skip the zero-fill (a frame is up to megabytes, per batch).
  const out = uninitialized(length);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint16(0, FRAME_MAGIC);
  out[2] = FRAME_VERSION;
  out[3] = 0;
  view.setUint32(4, packets.length);
  view.setUint32(8, length);
  let at = FRAME_HEADER_LEN;
  for (const p of packets) {
    if (p.vnet.length > MAX_VNET_LEN) throw new RangeError(`vnet header of ${p.vnet.length} bytes`);
    view.setUint16(at, p.vnet.length);
    view.setUint32(at + 2, p.data.length);
    at += PACKET_HEADER_LEN;
    out.set(p.vnet, at);
    at += p.vnet.length;
    out.set(p.data, at);
    at += p.data.length;
  }
  return out;
}

export interface FrameDecoderOptions {
  /** Frames longer than this are refused (FrameError) before they are buffered. */
  maxFrameBytes?: number;
}

/**
 * Streaming decoder: push() the stream's chunks as they arrive, split anywhere; it returns
 * the packets of every frame completed so far. It holds at most one incomplete frame
 * (≤ maxFrameBytes). After a FrameError the decoder is unusable: reset the stream.
 * Returned packets are views into the pushed chunks where a frame lies inside one chunk,
 * so a caller must not reuse a chunk's memory after pushing it.
 */
export class FrameDecoder {
  readonly maxFrameBytes: number;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  /** Length of the frame being collected, once its header has been read. */
  private frameLength = 0;
  private failed: FrameError | undefined;

  constructor(opts: FrameDecoderOptions = {}) {
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (this.maxFrameBytes < FRAME_HEADER_LEN + PACKET_HEADER_LEN) throw new RangeError('maxFrameBytes too small');
  }

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  push(chunk: Uint8Array): Packet[] {
    if (this.failed) throw this.failed;
    try {
      return this.consume(chunk);
    } catch (err) {
      this.failed = err instanceof FrameError ? err : new FrameError(String(err));
      this.pending = [];
      this.pendingBytes = 0;
      throw this.failed;
    }
  }

  private consume(chunk: Uint8Array): Packet[] {
    const out: Packet[] = [];
    let offset = 0;
    // Complete a frame started in earlier chunks.
    if (this.pendingBytes > 0) {
      offset = this.fillPending(chunk, 0);
      if (this.frameLength === 0 || this.pendingBytes < this.frameLength) return out;
      decodeFrameBody(this.takePending(), out);
    }
    // Frames lying wholly inside this chunk decode in place, without a copy.
    while (chunk.length - offset >= FRAME_HEADER_LEN) {
      const length = readFrameHeader(chunk, offset, this.maxFrameBytes);
      if (chunk.length - offset < length) break;
      decodeFrameBody(chunk.subarray(offset, offset + length), out);
      offset += length;
    }
    if (offset < chunk.length) this.fillPending(chunk, offset);
    return out;
  }

  /** Appends chunk[from..] up to the end of the current frame; returns where it stopped. */
  private fillPending(chunk: Uint8Array, from: number): number {
    let at = from;
    if (this.frameLength === 0) {
      const need = FRAME_HEADER_LEN - this.pendingBytes;
      const take = Math.min(need, chunk.length - at);
      this.pending.push(chunk.subarray(at, at + take));
      this.pendingBytes += take;
      at += take;
      if (this.pendingBytes < FRAME_HEADER_LEN) return at;
      this.frameLength = readFrameHeader(concat(this.pending, FRAME_HEADER_LEN), 0, this.maxFrameBytes);
    }
    const take = Math.min(this.frameLength - this.pendingBytes, chunk.length - at);
    if (take > 0) {
      this.pending.push(chunk.subarray(at, at + take));
      this.pendingBytes += take;
      at += take;
    }
    return at;
  }

  private takePending(): Uint8Array {
    const frame = concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    this.frameLength = 0;
    return frame;
  }
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1 && parts[0]!.length === length) return parts[0]!;
  const out = uninitialized(length); // fully overwritten below
  let at = 0;
  for (const p of parts) {
    out.set(p.subarray(0, length - at), at);
    at += Math.min(p.length, length - at);
    if (at === length) break;
  }
  return out;
}

/**
 * Validates the frame header at `offset` (FRAME_HEADER_LEN bytes must be there); returns
 * the frame's whole length. Throws FrameError on garbage or a frame over `maxFrameBytes`,
 * so a stream reader can refuse before buffering the body.
 */
export function readFrameHeader(buf: Uint8Array, offset: number, maxFrameBytes: number): number {
  const magic = (buf[offset]! << 8) | buf[offset + 1]!;
  if (magic !== FRAME_MAGIC) throw new FrameError(`bad frame magic 0x${magic.toString(16).padStart(4, '0')}`);
  if (buf[offset + 2] !== FRAME_VERSION) throw new FrameError(`unsupported frame version ${buf[offset + 2]}`);
  if (buf[offset + 3] !== 0) throw new FrameError(`unknown frame flags 0x${buf[offset + 3]!.toString(16)}`);
  const count = readU32(buf, offset + 4);
  const length = readU32(buf, offset + 8);
  if (length > maxFrameBytes) throw new FrameError(`frame of ${length} bytes exceeds the limit of ${maxFrameBytes}`);
  if (count === 0) throw new FrameError('frame with no packets');
  if (length < FRAME_HEADER_LEN + count * PACKET_HEADER_LEN) {
    throw new FrameError(`frame length ${length} too small for ${count} packets`);
  }
  return length;
}

/** Splits one complete, header-checked frame into packets (views into `frame`). */
function decodeFrameBody(frame: Uint8Array, out: Packet[]): void {
  const count = readU32(frame, 4);
  let at = FRAME_HEADER_LEN;
  for (let i = 0; i < count; i++) {
    if (frame.length - at < PACKET_HEADER_LEN) throw new FrameError(`frame ends inside packet ${i} of ${count}`);
    const vnetLength = (frame[at]! << 8) | frame[at + 1]!;
    const dataLength = readU32(frame, at + 2);
    at += PACKET_HEADER_LEN;
    if (vnetLength > MAX_VNET_LEN) throw new FrameError(`vnet header of ${vnetLength} bytes`);
    if (frame.length - at < vnetLength + dataLength) throw new FrameError(`packet ${i} of ${count} overruns its frame`);
    out.push({
      vnet: frame.subarray(at, at + vnetLength),
      data: frame.subarray(at + vnetLength, at + vnetLength + dataLength),
    });
    at += vnetLength + dataLength;
  }
  if (at !== frame.length) throw new FrameError(`${frame.length - at} stray bytes after ${count} packets`);
}

/**
 * A Uint8Array of `length` bytes without the zero-fill. A plain Uint8Array view, not the
 * Buffer itself, so callers keep Uint8Array semantics (Buffer#slice would not copy).
 */
function uninitialized(length: number): Uint8Array {
  const b = Buffer.allocUnsafe(length); // small sizes come from Node's pool: hence byteOffset
  return new Uint8Array(b.buffer, b.byteOffset, length);
}

function readU32(buf: Uint8Array, at: number): number {
  return ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
}
