// On-demand packet capture of what the forwarder moves, written as a classic pcap file
// (LINKTYPE_RAW: each record is a bare IPv4/IPv6 packet, as on the TUN) that tcpdump -r and
// tshark read. Bounded: a packet limit, a time limit and a byte budget end the capture.
import ipaddr from 'ipaddr.js';
import type { Packet } from './types.ts';

const LINKTYPE_RAW = 101;
const PCAP_MAGIC_USEC = 0xa1b2c3d4;
const DEFAULT_SNAPLEN = 262_144;
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmp6: 58, ipv6icmp: 58 };

export interface CaptureFilter {
  /** Only packets to or from this peer node (the forwarder's name for the remote node). */
  peer?: string;
  /** Only packets whose source or destination is this IPv4/IPv6 address. */
  host?: string;
  /** Only this IP protocol: a number or 'tcp' | 'udp' | 'icmp' | 'icmp6'. */
  proto?: number | string;
}

export interface CaptureOptions {
  filter?: CaptureFilter;
  maxPackets?: number;
  maxSeconds?: number;
  /** Bytes kept of each packet (the rest is cut, its original length recorded). */
  snaplen?: number;
  /** Upper bound on the capture's memory; the capture ends when it is reached. */
  maxBytes?: number;
}

export interface CaptureMeta {
  peer?: string;
  direction: 'tx' | 'rx';
}

/** Source, destination and upper protocol of an IP packet, or undefined if it is not one. */
export function ipSummary(data: Uint8Array): { src: Uint8Array; dst: Uint8Array; proto: number } | undefined {
  const version = (data[0] ?? 0) >> 4;
  if (version === 4 && data.length >= 20) {
    return { src: data.subarray(12, 16), dst: data.subarray(16, 20), proto: data[9] ?? 0 };
  }
  if (version === 6 && data.length >= 40) {
    return { src: data.subarray(8, 24), dst: data.subarray(24, 40), proto: data[6] ?? 0 };
  }
  return undefined;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function parseProto(p: number | string): number {
  if (typeof p === 'number') {
    if (!Number.isInteger(p) || p < 0 || p > 255) throw new Error(`capture filter: bad protocol number ${p}`);
    return p;
  }
  const n = PROTOCOLS[p.toLowerCase()] ?? (/^\d+$/.test(p) ? Number(p) : undefined);
  if (n === undefined || n > 255)
    throw new Error(`capture filter: unknown protocol "${p}" (tcp, udp, icmp, icmp6, 0-255)`);
  return n;
}

export class PacketCapture {
  /** Resolves when a limit is reached or stop() is called. */
  readonly done: Promise<void>;
  readonly #records: Buffer[] = [];
  readonly #peer: string | undefined;
  readonly #host: Uint8Array | undefined;
  readonly #proto: number | undefined;
  readonly #maxPackets: number;
  readonly #maxBytes: number;
  readonly #snaplen: number;
  readonly #finish: () => void;
  readonly #timer: NodeJS.Timeout | undefined;
  #bytes = 0;
  #finished = false;

  constructor(opts: CaptureOptions = {}) {
    const f = opts.filter ?? {};
    this.#peer = f.peer;
    if (f.host !== undefined) {
      if (!ipaddr.isValid(f.host)) throw new Error(`capture filter: "${f.host}" is not an IP address`);
      const addr = ipaddr.parse(f.host);
      // An IPv4-mapped IPv6 address names the IPv4 host.
      const plain =
        addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()
          ? (addr as ipaddr.IPv6).toIPv4Address()
          : addr;
      this.#host = Uint8Array.from(plain.toByteArray());
    }
    this.#proto = f.proto === undefined ? undefined : parseProto(f.proto);
    this.#maxPackets = opts.maxPackets ?? Number.POSITIVE_INFINITY;
    this.#maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.#snaplen = opts.snaplen ?? DEFAULT_SNAPLEN;
    if (!(this.#maxPackets > 0)) throw new Error('capture: maxPackets must be positive');
    if (!(this.#snaplen > 0 && this.#snaplen <= DEFAULT_SNAPLEN)) throw new Error('capture: snaplen must be 1..262144');
    const { promise, resolve } = Promise.withResolvers<void>();
    this.done = promise;
    this.#finish = resolve;
    if (opts.maxSeconds !== undefined) {
      if (!(opts.maxSeconds > 0)) throw new Error('capture: maxSeconds must be positive');
      this.#timer = setTimeout(() => this.stop(), opts.maxSeconds * 1000);
      this.#timer.unref();
    }
  }

  /** Packets recorded so far. */
  get packets(): number {
    return this.#records.length;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Records the packet if it passes the filter and the capture is still running. */
  offer(packet: Packet, meta: CaptureMeta): void {
    if (this.#finished) return;
    if (this.#peer !== undefined && meta.peer !== this.#peer) return;
    if (this.#host !== undefined || this.#proto !== undefined) {
      const ip = ipSummary(packet.data);
      if (!ip) return;
      if (this.#proto !== undefined && ip.proto !== this.#proto) return;
      if (this.#host !== undefined && !equalBytes(ip.src, this.#host) && !equalBytes(ip.dst, this.#host)) return;
    }
    const now = Date.now();
    const kept = Math.min(packet.data.length, this.#snaplen);
    const rec = Buffer.allocUnsafe(16 + kept);
    rec.writeUInt32LE(Math.floor(now / 1000), 0);
    rec.writeUInt32LE((now % 1000) * 1000, 4);
    rec.writeUInt32LE(kept, 8);
    rec.writeUInt32LE(packet.data.length, 12);
    rec.set(packet.data.subarray(0, kept), 16);
    this.#records.push(rec);
    this.#bytes += rec.length;
    if (this.#records.length >= this.#maxPackets || this.#bytes >= this.#maxBytes) this.stop();
  }

  /** Ends the capture early. */
  stop(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#finish();
  }

  /** The pcap file: global header and every record so far. */
  toBuffer(): Buffer {
    const header = Buffer.alloc(24);
    header.writeUInt32LE(PCAP_MAGIC_USEC, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeInt32LE(0, 8);
    header.writeUInt32LE(0, 12);
    header.writeUInt32LE(this.#snaplen, 16);
    header.writeUInt32LE(LINKTYPE_RAW, 20);
    return Buffer.concat([header, ...this.#records]);
  }
}
