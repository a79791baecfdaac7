// Authenticated UDP sessions: the data plane's fast path (see dataplane/native/udp.c for the
// wire format, the AEAD and the replay window). This file is the thin TypeScript face of
// the native engine: it checks arguments, turns each delivered buffer into Packet views (no
// copies) grouped by session and sender, and keeps nothing per packet.
//
// Key exchange, candidate endpoints and the decision when to rekey are the overlay's: it
// adds sessions with keys it derived, watches session() and replaces them (rekey = add a
// new localIndex, switch tx to it, keep the old one for a grace period, then remove it).
import { isIP } from 'node:net';
import { logger } from '../common/log.ts';
import { nativeAddon } from './native-addon.ts';
import { type Packet, VNET_HDR_LEN } from './types.ts';

export interface UdpEndpoint {
  /** IPv4 or IPv6 address text. */
  ip: string;
  port: number;
  /**
   * Which of the engine's sockets reaches it: absent or 0 the main one, else an extra socket
   * (addSocket). On a received control message: the socket it arrived on.
   */
  socket?: number;
}

export interface SessionKeys {
  /** Our index: the peer puts it in every datagram for us (u32, unique on this socket). */
  localIndex: number;
  /** The peer's index for this session: we put it in every datagram we send. */
  remoteIndex: number;
  /** 32-byte key sealing what we send. */
  txKey: Uint8Array;
  /** 32-byte key opening what we receive. */
  rxKey: Uint8Array;
}

/** The AEAD both ends of a socket's sessions use (aes-256-gcm measured 5× faster here, see docs). */
export type UdpCipher = 'aes-256-gcm' | 'chacha20-poly1305';

export interface UdpDataSocketOptions {
  /** Local address: '0.0.0.0', '::' (takes IPv4 too) or one address. */
  bind: string;
  /** 0 lets the kernel pick (read it back from `port`). */
  port: number;
  /** Opened data packets of one session from one sender; views are valid only during the call. */
  onPackets(localIndex: number, packets: Packet[], from: UdpEndpoint): void;
  /** An opened control message (the overlay's probes, binding requests, keepalives); valid during the call. */
  onControl(localIndex: number, message: Uint8Array, from: UdpEndpoint): void;
  /** Largest inner packet (the tunnel MTU). Default 1420: a 1500-byte underlay less IPv6 + UDP + 32 bytes of session header and tag. */
  mtu?: number;
  /** Default 'aes-256-gcm'. Both ends must use the same. */
  cipher?: UdpCipher;
  /** Datagrams a session may send before it must be replaced (default: WireGuard's 2^64 - 2^13 - 1). For tests. */
  counterLimit?: number;
  /**
   * Coalesce received TCP segments of one flow into GSO super-packets (default true): the
   * TUN then takes one write per ~64 KiB. Needs a TUN with offloads on the receiving side
   * (the forwarder segments again for one without).
   */
  coalesce?: boolean;
  /**
   * Where datagrams are received: 'thread' — a reader thread reads, opens and queues
   * batches for the JS thread; 'loop' — uv_poll on Node's event loop, read and opened on the
   * JS thread itself (one thread hop less per packet: lower RTT, no overlap of opening and JS);
   * 'auto' (default) — the loop while traffic is light, handed to the thread when one wake-up
   * opens 8 datagrams, and back to the loop after 20 ms without one (the loop's RTT when idle,
   * the thread's throughput and smaller bursts under load; docs/decisions.md).
   */
  receiver?: 'thread' | 'loop' | 'auto';
  /** Called when onPackets/onControl throws (the error is counted, the socket keeps running). */
  onError?(err: Error): void;
}

export interface UdpSessionInfo {
  /** Datagrams sealed by this session so far (the next counter). */
  txCounter: bigint;
  rxPackets: number;
  /** Milliseconds since the last authentic datagram, -1 when none arrived yet. */
  lastRxAgeMs: number;
  createdAgeMs: number;
}

export interface UdpSocketStats {
  rxDatagrams: number;
  txDatagrams: number;
  rxBatches: number;
  /** Received TCP segments merged into a previous packet of their flow. */
  rxCoalesced: number;
  /** Receiver 'auto': times receiving moved from the event loop to the thread (load came) and back (idle). */
  receiverHandoffs: number;
  receiverHandbacks: number;
  sessions: number;
  /** Extra sockets open (addSocket). */
  extraSockets: number;
  /** Whether sends still use UDP_SEGMENT (cleared when the path refuses it). */
  gso: boolean;
  /** errno name of the last failed send (e.g. EMSGSIZE when the underlay MTU is below the tunnel's), or null. */
  lastTxError: string | null;
  /** Drops by reason: short, bad-type, unknown-index, auth-failed, replay, oversize, counter-limit, ... */
  drops: Record<string, number>;
}

/** Session header (16 bytes) + AEAD tag (16 bytes) on every datagram. */
export const UDP_SESSION_OVERHEAD = 32;
/** Outer IP + UDP header bytes by underlay family. */
export const UDP_OUTER_HEADER = { 4: 28, 6: 48 } as const;
export const DEFAULT_UDP_MTU = 1500 - UDP_OUTER_HEADER[6] - UDP_SESSION_OVERHEAD;

/** The tunnel MTU (largest inner packet) for an underlay path MTU. */
export function tunnelMtu(pathMtu: number, family: 4 | 6): number {
  return pathMtu - UDP_OUTER_HEADER[family] - UDP_SESSION_OVERHEAD;
}

interface NativeHandle {
  readonly port: number;
}

interface NativeUdp {
  udpOpen(
    opts: {
      bind: string;
      port: number;
      mtu: number;
      cipher: string;
      counterLimit?: number;
      coalesce?: boolean;
      receiver?: string;
    },
    cb: (buf: ArrayBuffer, count: number) => void,
  ): NativeHandle;
  udpAddSession(
    h: NativeHandle,
    localIndex: number,
    remoteIndex: number,
    txKey: Uint8Array,
    rxKey: Uint8Array,
    ip?: string,
    port?: number,
  ): void;
  udpSetEndpoint(h: NativeHandle, localIndex: number, ip: string, port: number, socket?: number): void;
  udpRemoveSession(h: NativeHandle, localIndex: number): boolean;
  udpSession(h: NativeHandle, localIndex: number): UdpSessionInfo | undefined;
  udpSend(h: NativeHandle, localIndex: number, parts: Uint8Array[]): number;
  udpSendControl(
    h: NativeHandle,
    localIndex: number,
    message: Uint8Array,
    ip?: string,
    port?: number,
    socket?: number,
  ): boolean;
  udpAddSocket(h: NativeHandle): { id: number; port: number };
  udpCloseSocket(h: NativeHandle, id: number): boolean;
  udpSendRelayAllocate(h: NativeHandle, datagram: Uint8Array, ip: string, port: number): boolean;
  udpStats(h: NativeHandle): UdpSocketStats;
  udpClose(h: NativeHandle): void;
  udpSegment(vnet: Uint8Array, data: Uint8Array): Uint8Array[] | string;
  udpCryptoBench(cipher: UdpCipher, size: number, iterations: number): { sealNsPerByte: number; openNsPerByte: number };
}

/** The addon (build/edgemesh_tun.node): the UDP engine lives beside the TUN code. */
export function udpNative(): NativeUdp {
  return nativeAddon<NativeUdp>();
}

const MSG_DATA = 4;
const REC_HDR = 38;
// Received packets that were not coalesced are plain (complete checksums, no GSO): they
// share one all-zero header. Consumers must not write into it.
const ZERO_VNET = new Uint8Array(VNET_HDR_LEN);

function checkIndex(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be a u32 integer, got ${v}`);
}

function checkEndpoint(e: UdpEndpoint): void {
  if (isIP(e.ip) === 0) throw new TypeError(`endpoint ip must be an IPv4 or IPv6 address, got ${JSON.stringify(e.ip)}`);
  if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535)
    throw new RangeError(`endpoint port must be 1-65535, got ${e.port}`);
  if (e.socket !== undefined && (!Number.isInteger(e.socket) || e.socket < 0 || e.socket > 0xffff))
    throw new RangeError(`endpoint socket must be a socket id, got ${e.socket}`);
}

function addressText(rec: Uint8Array, family: number): string {
  if (family === 4) return `${rec[12]}.${rec[13]}.${rec[14]}.${rec[15]}`;
  const words: string[] = [];
  for (let i = 12; i < 28; i += 2) words.push(((rec[i]! << 8) | rec[i + 1]!).toString(16));
  // Compress the longest zero run as the canonical text form does.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return words.join(':');
  return `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`;
}

export class UdpDataSocket {
  /** The bound port (the kernel's pick when opened with port 0). */
  readonly port: number;
  /** Largest inner packet sealed; larger ones are dropped and counted as 'oversize'. */
  readonly mtu: number;
  readonly #native: NativeUdp;
  readonly #handle: NativeHandle;
  readonly #onPackets: UdpDataSocketOptions['onPackets'];
  readonly #onControl: UdpDataSocketOptions['onControl'];
  readonly #onError: ((err: Error) => void) | undefined;
  #parts: Uint8Array[] = [];
  #handlerErrors = 0;
  #closed = false;
  #finalStats: UdpSocketStats | undefined;

  private constructor(n: NativeUdp, opts: UdpDataSocketOptions) {
    this.#native = n;
    this.#onPackets = opts.onPackets;
    this.#onControl = opts.onControl;
    this.#onError = opts.onError;
    this.mtu = opts.mtu ?? DEFAULT_UDP_MTU;
    this.#handle = n.udpOpen(
      {
        bind: opts.bind,
        port: opts.port,
        mtu: this.mtu,
        cipher: opts.cipher ?? 'aes-256-gcm',
        ...(opts.counterLimit !== undefined ? { counterLimit: opts.counterLimit } : {}),
        ...(opts.coalesce !== undefined ? { coalesce: opts.coalesce } : {}),
        receiver: opts.receiver ?? 'auto',
      },
      (buf, count) => this.#deliver(buf, count),
    );
    this.port = this.#handle.port;
  }

  /** Binds the socket and starts receiving. Throws an Error whose message starts with the errno name. */
  static open(opts: UdpDataSocketOptions): UdpDataSocket {
    if (isIP(opts.bind) === 0) throw new TypeError(`bind must be an IP address, got ${JSON.stringify(opts.bind)}`);
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)
      throw new RangeError(`port must be 0-65535, got ${opts.port}`);
    if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 576 || opts.mtu > 65475))
      throw new RangeError(`mtu must be an integer 576-65475, got ${opts.mtu}`);
    return new UdpDataSocket(udpNative(), opts);
  }

  /** Adds a session (also the new half of a rekey). Throws if localIndex is taken or the keys are not 32 bytes. */
  addSession(keys: SessionKeys, endpoint?: UdpEndpoint): void {
    checkIndex('localIndex', keys.localIndex);
    checkIndex('remoteIndex', keys.remoteIndex);
    if (endpoint) checkEndpoint(endpoint);
    this.#native.udpAddSession(
      this.#handle,
      keys.localIndex,
      keys.remoteIndex,
      keys.txKey,
      keys.rxKey,
      endpoint?.ip,
      endpoint?.port,
    );
  }

  /** Where the session's datagrams go (e.g. the candidate that answered a probe). */
  setEndpoint(localIndex: number, endpoint: UdpEndpoint): void {
    checkIndex('localIndex', localIndex);
    checkEndpoint(endpoint);
    this.#native.udpSetEndpoint(this.#handle, localIndex, endpoint.ip, endpoint.port, endpoint.socket);
  }

  /**
   * Opens one more UDP socket (same address, a port the kernel picks) whose datagrams the
   * receiver opens like the main socket's. For punching through an endpoint-dependent NAT:
   * every socket gets its own mapping there. Throws ENOSPC past the engine's bound (1024).
   */
  addSocket(): { id: number; port: number } {
    return this.#native.udpAddSocket(this.#handle);
  }

  /** Closes an extra socket; sessions whose endpoint used it have no endpoint afterwards. */
  closeSocket(id: number): boolean {
    if (this.#closed) return false;
    return this.#native.udpCloseSocket(this.#handle, id);
  }

  /** Forgets a session and wipes its keys; datagrams for it count as unknown-index from now on. */
  removeSession(localIndex: number): boolean {
    checkIndex('localIndex', localIndex);
    return this.#native.udpRemoveSession(this.#handle, localIndex);
  }

  /**
   * Seals and sends a batch (GSO super-packets are segmented first, in C). Returns how many
   * packets were accepted; the rest are counted in stats().drops.
   */
  send(localIndex: number, packets: readonly Packet[]): number {
    const parts = this.#parts;
    parts.length = 0;
    for (const p of packets) parts.push(p.vnet, p.data);
    const n = this.#native.udpSend(this.#handle, localIndex, parts);
    parts.length = 0;
    return n;
  }

  /**
   * Sends one sealed control message (≤ 1200 bytes) to the session's endpoint or to `to`
   * (from `to.socket`, default the main socket). False when it did not leave (counted).
   */
  sendControl(localIndex: number, message: Uint8Array, to?: UdpEndpoint): boolean {
    if (to) checkEndpoint(to);
    return this.#native.udpSendControl(this.#handle, localIndex, message, to?.ip, to?.port, to?.socket);
  }

  /**
   * Sends a relay allocate datagram (64 bytes, type 6: see dataplane/udp-relay.ts) from this
   * socket's port to a relay, which then forwards the sessions that name its receiver indexes
   * between this socket and the binding's other member. Re-send it to move the endpoint (NAT
   * rebinding), to add a rekey's new index, and as a keepalive for the NAT mapping.
   */
  sendRelayAllocate(relay: UdpEndpoint, datagram: Uint8Array): boolean {
    checkEndpoint(relay);
    return this.#native.udpSendRelayAllocate(this.#handle, datagram, relay.ip, relay.port);
  }

  /** A session's counters (the overlay rekeys on their age and count); undefined when unknown or closed. */
  session(localIndex: number): UdpSessionInfo | undefined {
    if (this.#closed) return undefined;
    return this.#native.udpSession(this.#handle, localIndex);
  }

  /** Socket counters; after close(), the last ones. */
  stats(): UdpSocketStats {
    if (this.#finalStats) return structuredClone(this.#finalStats);
    const s = this.#native.udpStats(this.#handle);
    if (this.#handlerErrors > 0) s.drops['handler-error'] = this.#handlerErrors;
    return s;
  }

  /** Stops the receiver, closes the socket and wipes every session's keys. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#finalStats = { ...this.stats(), sessions: 0 };
    this.#closed = true;
    this.#native.udpClose(this.#handle);
  }

  get closed(): boolean {
    return this.#closed;
  }

  // One delivered buffer: records [u32 len][u32 localIndex][u8 type][u8 family][u16 port][16 addr][10 vnet][payload].
  // Runs of data records with the same session and sender become one onPackets call.
  #deliver(buf: ArrayBuffer, count: number): void {
    const bytes = new Uint8Array(buf);
    const view = new DataView(buf);
    let off = 0;
    let run: Packet[] = [];
    let runIndex = -1;
    let runFrom: UdpEndpoint | undefined;
    // The run's sender: port and address words, compared as numbers (no text per packet).
    let k0 = -1;
    let k1 = 0;
    let k2 = 0;
    let k3 = 0;
    let k4 = 0;
    const flush = () => {
      const from = runFrom;
      const packets = run;
      if (packets.length > 0 && from) this.#call(() => this.#onPackets(runIndex, packets, from));
      run = [];
      k0 = -1;
    };
    for (let i = 0; i < count && off + REC_HDR <= buf.byteLength; i++) {
      const len = view.getUint32(off, true);
      const localIndex = view.getUint32(off + 4, true);
      const type = bytes[off + 8]!;
      const family = bytes[off + 9]!;
      const port = view.getUint16(off + 10, false);
      const a1 = view.getUint32(off + 12, true);
      const a2 = view.getUint32(off + 16, true);
      const a3 = view.getUint32(off + 20, true);
      const a4 = view.getUint32(off + 24, true);
      const rec = bytes.subarray(off, off + REC_HDR);
      if (off + REC_HDR + len > buf.byteLength) break;
      const payload = new Uint8Array(buf, off + REC_HDR, len);
      off += REC_HDR + len;
      if (type === MSG_DATA) {
        if (localIndex !== runIndex || port !== k0 || a1 !== k1 || a2 !== k2 || a3 !== k3 || a4 !== k4) {
          flush();
          runIndex = localIndex;
          runFrom = { ip: addressText(rec, family), port };
          k0 = port;
          k1 = a1;
          k2 = a2;
          k3 = a3;
          k4 = a4;
        }
        // A coalesced TCP super-packet carries its own virtio_net_hdr in the record.
        const vnet = bytes[off - len - 10 + 1] !== 0 ? new Uint8Array(buf, off - len - 10, VNET_HDR_LEN) : ZERO_VNET;
        run.push({ vnet, data: payload });
      } else {
        flush();
        runIndex = -1;
        // Control records carry the socket they arrived on where data records have a vnet header.
        const socket = rec[28]! | (rec[29]! << 8);
        const from: UdpEndpoint =
          socket === 0 ? { ip: addressText(rec, family), port } : { ip: addressText(rec, family), port, socket };
        this.#call(() => this.#onControl(localIndex, payload, from));
      }
    }
    flush();
  }

  #call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#handlerErrors++;
      if (this.#onError) this.#onError(err as Error);
      else logger('udp-session').error({ err }, 'UDP session handler threw');
    }
  }
}

/** Segments one packet the way send() does (test hook: checked against segmentation.ts). */
export function segmentNative(packet: Packet): Uint8Array[] | string {
  return udpNative().udpSegment(packet.vnet, packet.data);
}

/** ns per byte to seal and to open `size`-byte payloads with the Node binary's OpenSSL. */
export function cryptoBench(
  cipher: UdpCipher,
  size: number,
  iterations: number,
): { sealNsPerByte: number; openNsPerByte: number } {
  return udpNative().udpCryptoBench(cipher, size, iterations);
}
