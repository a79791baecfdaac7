// The TUN device as the forwarder sees it: batches of Packets in, batches out, counters.
// The native addon (dataplane/native/tun.c) does the syscalls on its own thread; this file
// turns its batch buffers into Packet views (no copies) and keeps the statistics.

import { logger } from '../common/log.ts';
import { nativeAddon } from './native-addon.ts';
import { type SegmentRejectReason, toPlainPackets } from './segmentation.ts';
import { type Packet, type PacketIO, VNET_HDR_LEN } from './types.ts';
import { GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, gsoType, isGso, needsChecksum } from './vnet-header.ts';

interface NativeHandle {
  readonly name: string;
  readonly offload: boolean;
  readonly offloadFlags: string[];
  readonly mtu: number;
}

interface NativeStats {
  rxBatches: number;
  rxReadErrors: number;
  txErrors: number;
  readerHandoffs: number;
  readerHandbacks: number;
  lastTxError: string | null;
}

interface NativeTun {
  open(opts: { name: string; offload: boolean; mtu?: number; netns?: string; writeBurst?: number }): NativeHandle;
  start(h: NativeHandle, cb: (buf: ArrayBuffer | null, count: number, err?: string) => void, reader: TunReader): void;
  write(h: NativeHandle, parts: Uint8Array[], partsPerPacket: 1 | 2, status: Uint8Array): number;
  stats(h: NativeHandle): NativeStats;
  close(h: NativeHandle): void;
}

function loadNative(): NativeTun {
  return nativeAddon<NativeTun>();
}

/**
 * Where a TUN is read. 'thread': a reader thread drains it and queues batches for the JS
 * thread (reading overlaps JS: the most throughput). 'loop': the fd is polled on Node's event
 * loop and read on the JS thread itself (one thread hop less per packet: lower RTT, but no
 * overlap). 'auto': on the loop while traffic is light, handed to the thread when one wake-up
 * finds 8 packets or 64 KiB, and back to the loop after 20 ms without a packet (the default:
 * the loop's RTT when idle, the thread's throughput under load; docs/decisions.md).
 */
export type TunReader = 'thread' | 'loop' | 'auto';

export interface TunOpenOptions {
  /** Interface name (≤ 15 characters); an existing TUN is attached, otherwise one is created. */
  name: string;
  /** virtio_net_hdr + TSO/USO offloads (GSO super-packets). Default true. */
  offload?: boolean;
  /** Sets the interface MTU when given. */
  mtu?: number;
  /**
   * Network namespace (a name under /var/run/netns or a path) to create the TUN in.
   * Default: the process's current namespace. Only the open happens there; the fd works anywhere.
   */
  netns?: string;
  /** Where the device is read (default 'auto'), see TunReader. */
  reader?: TunReader;
  /**
   * Packets one write() puts into the device before it yields the CPU (sched_yield), 0 for
   * never (default). Every TUN write hands its packet to the receiving socket at once, so a
   * long run of small packets overflows a receiver's default socket buffer (~90 datagrams)
   * unless the receiver gets to read in between.
   */
  writeBurst?: number;
}

export interface TunStats {
  rxPackets: number;
  rxBytes: number;
  rxSuperPackets: number;
  rxBatches: number;
  txPackets: number;
  txBytes: number;
  txSuperPackets: number;
  /** Read errors, refused writes and malformed records. */
  errors: number;
  /**
   * Packets write() refused before the kernel saw them, by reason: a super-packet it had to
   * cut but could not (segmentation's reasons), or a missing vnet header. Also in errors.
   */
  refused: Partial<Record<WriteRefusal, number>>;
  /** Exceptions thrown by the onBatch handler (also reported to onError). */
  handlerErrors: number;
  /** Reader 'auto': times reading moved from the event loop to the thread (load came) and back (idle). */
  readerHandoffs: number;
  readerHandbacks: number;
  lastTxError: string | null;
}

export type WriteRefusal = SegmentRejectReason | 'bad-vnet-header';

/**
 * What a TUN takes from a write: the packet as it is when the device can offload it, else
 * its software segments (or the packet with its partial checksum completed, in place).
 * `offloadFlags` are the device's accepted offloads: a peer's kernel may produce a GSO kind
 * ours lacks (UDP segmentation offload arrived in Linux 6.2).
 */
export function packetsForTun(
  packet: Packet,
  offload: boolean,
  offloadFlags: readonly string[],
): ReturnType<typeof toPlainPackets> {
  if (tunTakesAsIs(packet, offload, offloadFlags)) return { ok: true, packets: [packet] };
  return toPlainPackets(packet);
}

/** Whether the device takes the packet unchanged (the common case: no allocation on the hot path). */
function tunTakesAsIs(packet: Packet, offload: boolean, offloadFlags: readonly string[]): boolean {
  return offload ? takesAsIs(packet, offloadFlags) : !isGso(packet.vnet) && !needsChecksum(packet.vnet);
}

function takesAsIs(p: Packet, flags: readonly string[]): boolean {
  const type = gsoType(p.vnet);
  if (type === GSO_NONE) return true;
  if (type === GSO_TCPV4) return flags.includes('tso4');
  if (type === GSO_TCPV6) return flags.includes('tso6');
  if (type === GSO_UDP_L4) return flags.includes(p.data[0]! >> 4 === 6 ? 'uso6' : 'uso4');
  return false;
}

// Shared header for packets of a TUN without offloads. Consumers must not write into it.
const ZERO_VNET = new Uint8Array(VNET_HDR_LEN);

export class TunDevice implements PacketIO {
  readonly name: string;
  readonly offload: boolean;
  /** Offload features the kernel accepted, e.g. ['csum','tso4','tso6','uso4','uso6']. */
  readonly offloadFlags: readonly string[];
  /** MTU when opened; larger packets read from the TUN are GSO super-packets. */
  readonly mtu: number;

  readonly #native: NativeTun;
  readonly #handle: NativeHandle;
  #handler: ((batch: Packet[]) => void) | undefined;
  #errorHandler: ((err: Error) => void) | undefined;
  readonly #reader: TunReader;
  #started = false;
  #closed = false;
  #status = new Uint8Array(256);
  #rxPackets = 0;
  #rxBytes = 0;
  #rxSuper = 0;
  #txPackets = 0;
  #txBytes = 0;
  #txSuper = 0;
  #localErrors = 0;
  #handlerErrors = 0;
  readonly #refused: Partial<Record<WriteRefusal, number>> = {};

  private constructor(nativeTun: NativeTun, handle: NativeHandle, reader: TunReader) {
    this.#native = nativeTun;
    this.#reader = reader;
    this.#handle = handle;
    this.name = handle.name;
    this.offload = handle.offload;
    this.offloadFlags = Object.freeze([...handle.offloadFlags]);
    this.mtu = handle.mtu;
  }

  /** Opens (or attaches to) a TUN. Throws an Error whose message starts with the errno name. */
  static open(opts: TunOpenOptions): TunDevice {
    const n = loadNative();
    const handle = n.open({
      name: opts.name,
      offload: opts.offload ?? true,
      ...(opts.mtu !== undefined ? { mtu: opts.mtu } : {}),
      ...(opts.netns !== undefined ? { netns: opts.netns } : {}),
      ...(opts.writeBurst !== undefined ? { writeBurst: opts.writeBurst } : {}),
    });
    return new TunDevice(n, handle, opts.reader ?? 'auto');
  }

  /**
   * Sets the batch handler; the first call starts reading (the reader thread, or polling on
   * the loop). A batch's packets are views of the reader's buffer, valid until the handler
   * returns (the loop reuses one buffer, the reader thread a fixed pool: the views are
   * emptied afterwards); copy what must outlive it.
   */
  onBatch(handler: (batch: Packet[]) => void): void {
    if (this.#closed) throw new Error(`EBADF: TUN ${this.name} is closed`);
    this.#handler = handler;
    if (this.#started) return;
    this.#started = true;
    this.#native.start(this.#handle, (buf, count, err) => this.#deliver(buf, count, err), this.#reader);
  }

  /** Called when the reader stops on an error (e.g. the interface was deleted) or the batch handler throws. */
  onError(handler: (err: Error) => void): void {
    this.#errorHandler = handler;
  }

  #deliver(buf: ArrayBuffer | null, count: number, err?: string): void {
    if (buf === null) {
      this.#localErrors++;
      this.#errorHandler?.(new Error(`${err ?? 'EIO'}: reading TUN ${this.name} stopped`));
      return;
    }
    const view = new DataView(buf);
    const hdr = this.offload ? VNET_HDR_LEN : 0;
    const batch: Packet[] = [];
    let off = 0;
    for (let i = 0; i < count; i++) {
      if (off + 4 > buf.byteLength) {
        this.#localErrors++;
        break;
      }
      const len = view.getUint32(off, true);
      const start = off + 4;
      off = start + len;
      if (off > buf.byteLength || len <= hdr) {
        this.#localErrors++;
        break;
      }
      const vnet = hdr ? new Uint8Array(buf, start, hdr) : ZERO_VNET;
      const data = new Uint8Array(buf, start + hdr, len - hdr);
      this.#rxBytes += data.length;
      if (data.length > this.mtu || (hdr && isGso(vnet))) this.#rxSuper++;
      batch.push({ vnet, data });
    }
    this.#rxPackets += batch.length;
    if (batch.length === 0 || !this.#handler) return;
    // A throwing handler must not kill the reader (N-API would only print a warning for an
    // exception escaping a thread-safe callback): count it and report it.
    try {
      this.#handler(batch);
    } catch (err) {
      this.#handlerErrors++;
      if (this.#errorHandler) this.#errorHandler(err as Error);
      else logger('tun', { dev: this.name }).error({ err }, 'TUN batch handler threw');
    }
  }

  /**
   * Writes a batch; returns how many of its packets the kernel accepted. Any packet may be
   * handed over: what this device cannot offload is segmented here first (a partial
   * checksum is completed in place in `packet.data`), and a packet counts as accepted when
   * all its segments were. Refused packets (a super-packet that cannot be cut, a bad
   * header, too big for a TUN without offloads, …) are counted in stats().
   */
  write(batch: Packet[]): number {
    if (this.#closed) throw new Error(`EBADF: TUN ${this.name} is closed`);
    if (batch.length === 0) return 0;
    const parts: Uint8Array[] = [];
    const sent: Packet[] = [];
    /** For each entry of `sent`, the index in `batch` it came from (segments share one). */
    const from: number[] = [];
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      if (this.offload && p.vnet.length !== VNET_HDR_LEN) {
        this.#refuse('bad-vnet-header');
        continue;
      }
      if (tunTakesAsIs(p, this.offload, this.offloadFlags)) {
        if (this.offload) parts.push(p.vnet, p.data);
        else parts.push(p.data);
        sent.push(p);
        from.push(i);
        continue;
      }
      const ready = toPlainPackets(p);
      if (!ready.ok) {
        this.#refuse(ready.reason);
        continue;
      }
      for (const q of ready.packets) {
        if (this.offload) parts.push(q.vnet, q.data);
        else parts.push(q.data);
        sent.push(q);
        from.push(i);
      }
    }
    if (sent.length === 0) return 0;
    if (this.#status.length < sent.length)
      this.#status = new Uint8Array(Math.max(sent.length, 2 * this.#status.length));
    this.#native.write(this.#handle, parts, this.offload ? 2 : 1, this.#status);
    let accepted = 0;
    let whole = true;
    for (let i = 0; i < sent.length; i++) {
      if (this.#status[i] === 1) {
        const p = sent[i]!;
        this.#txPackets++;
        this.#txBytes += p.data.length;
        if (p.data.length > this.mtu || (this.offload && isGso(p.vnet))) this.#txSuper++;
      } else {
        whole = false;
      }
      if (from[i + 1] !== from[i]) {
        if (whole) accepted++;
        whole = true;
      }
    }
    return accepted;
  }

  #refuse(reason: WriteRefusal): void {
    this.#localErrors++;
    this.#refused[reason] = (this.#refused[reason] ?? 0) + 1;
  }

  stats(): TunStats {
    const s = this.#native.stats(this.#handle);
    return {
      rxPackets: this.#rxPackets,
      rxBytes: this.#rxBytes,
      rxSuperPackets: this.#rxSuper,
      rxBatches: s.rxBatches,
      txPackets: this.#txPackets,
      txBytes: this.#txBytes,
      txSuperPackets: this.#txSuper,
      errors: this.#localErrors + s.rxReadErrors + s.txErrors,
      handlerErrors: this.#handlerErrors,
      refused: { ...this.#refused },
      readerHandoffs: s.readerHandoffs,
      readerHandbacks: s.readerHandbacks,
      lastTxError: s.lastTxError,
    };
  }

  /** Stops the reader thread and closes the fd (a non-persistent TUN disappears). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close(this.#handle);
  }
}
