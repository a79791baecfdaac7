// Test harness for the UDP session integration tests and the bench: two namespaces joined by
// a veth pair (IPv4 and IPv6 underlay addresses), each running udp-node.ts (a real TUN +
// Forwarder + UdpDataSocket) as its own process, sessions keyed by the test; iperf3 between
// the pod addresses routed through the TUNs.
import { type ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { run } from '../../../common/exec.ts';
import { ipBatch } from '../../../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';
import type { UdpSocketStats } from '../../../dataplane/udp-session.ts';

const nodeScript = fileURLToPath(new URL('./udp-node.ts', import.meta.url));

// Addresses exist only inside the two namespaces.
export const LINK_A = { 4: '192.168.78.1', 6: 'fd00:78::1' } as const;
export const LINK_B = { 4: '192.168.78.2', 6: 'fd00:78::2' } as const;
export const POD_A = { 4: '10.211.0.1', 6: 'fd00:211::1' } as const;
export const POD_B = { 4: '10.212.0.1', 6: 'fd00:212::1' } as const;
export const UDP_PORT = 7100;
type Pods = { readonly 4: string; readonly 6: string };

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface UdpNodeStats {
  forwarder: {
    peers: Record<string, { txPackets: number; txBytes: number; rxPackets: number; rxBytes: number; drops: number }>;
    drops: Record<string, number>;
    icmpTooBig: number;
  };
  tun: {
    rxPackets: number;
    rxSuperPackets: number;
    txPackets: number;
    txSuperPackets: number;
    errors: number;
    readerHandoffs: number;
    readerHandbacks: number;
  };
  udp: UdpSocketStats;
  controls: number;
  cpuSeconds: number;
}

export interface Keys {
  localIndex: number;
  remoteIndex: number;
  txKey: Buffer;
  rxKey: Buffer;
}

/** A udp-node process and its line protocol. */
export class UdpNode {
  readonly child: ChildProcess;
  readonly ready: Promise<{ port: number }>;
  private nextId = 1;
  private readonly waiting = new Map<string, (reply: { result?: unknown; error?: string }) => void>();
  stderr = '';

  /** `script`: udp-node.ts by default; any child speaking the same line protocol (e.g. relay-node.ts). */
  constructor(ns: string, args: string[], script = nodeScript) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, script, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    let readyResolve: (v: { port: number }) => void;
    let readyReject: (e: Error) => void;
    this.ready = new Promise((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    const timer = setTimeout(() => readyReject(new Error(`udp-node not ready: ${this.stderr}`)), 30_000);
    this.child.on('exit', () => readyReject(new Error(`udp-node exited: ${this.stderr}`)));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as { id?: string; event?: string; result?: unknown; error?: string; port?: number };
      if (msg.event === 'ready') {
        clearTimeout(timer);
        readyResolve({ port: msg.port! });
      } else if (msg.id) {
        this.waiting.get(msg.id)?.(msg);
        this.waiting.delete(msg.id);
      }
    });
  }

  command<T>(cmd: string, arg?: unknown): Promise<T> {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (reply) => (reply.error ? reject(new Error(reply.error)) : resolve(reply.result as T)));
      this.child.stdin!.write(`${id} ${cmd}${arg === undefined ? '' : ` ${JSON.stringify(arg)}`}\n`);
    });
  }

  stats(): Promise<UdpNodeStats> {
    return this.command<UdpNodeStats>('stats');
  }

  addSession(k: Keys, endpoint?: { ip: string; port: number }): Promise<boolean> {
    return this.command('add-session', {
      localIndex: k.localIndex,
      remoteIndex: k.remoteIndex,
      txKey: k.txKey.toString('hex'),
      rxKey: k.rxKey.toString('hex'),
      ...(endpoint ? { endpoint } : {}),
    });
  }
}

/** Keys for one session, both halves: a is A's view, b is B's. */
export function sessionKeys(indexA: number, indexB: number): { a: Keys; b: Keys } {
  const ab = randomBytes(32);
  const ba = randomBytes(32);
  return {
    a: { localIndex: indexA, remoteIndex: indexB, txKey: ab, rxKey: ba },
    b: { localIndex: indexB, remoteIndex: indexA, txKey: ba, rxKey: ab },
  };
}

/**
 * A datagram in the session wire format, sealed here with node:crypto (an implementation
 * independent of the addon's): [type 4][0 0 0][receiver index LE][counter LE] + AES-256-GCM.
 */
export function sealDatagram(
  key: Uint8Array,
  receiverIndex: number,
  counter: bigint,
  payload: Uint8Array,
  type = 4,
): Buffer {
  const header = Buffer.alloc(16);
  header[0] = type;
  header.writeUInt32LE(receiverIndex, 4);
  header.writeBigUInt64LE(counter, 8);
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64LE(counter, 4);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(header);
  return Buffer.concat([header, c.update(payload), c.final(), c.getAuthTag()]);
}

/**
 * The session datagrams in a pcap of the underlay (Ethernet frames from a veth). A UDP GSO
 * send shows up there as one super-datagram: it is cut where the next header follows
 * (same type and index, counter + 1).
 */
export function datagramsFromPcap(file: string, port: number): Buffer[] {
  const pcap = readFileSync(file);
  const out: Buffer[] = [];
  let off = 24;
  while (off + 16 <= pcap.length) {
    const incl = pcap.readUInt32LE(off + 8);
    const frame = pcap.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (frame.length < 14) continue;
    const etherType = frame.readUInt16BE(12);
    let udp: Buffer;
    if (etherType === 0x0800) {
      const ihl = (frame[14]! & 0x0f) * 4;
      if (frame[14 + 9] !== 17) continue;
      udp = frame.subarray(14 + ihl);
    } else if (etherType === 0x86dd) {
      if (frame[14 + 6] !== 17) continue;
      udp = frame.subarray(14 + 40);
    } else continue;
    if (udp.length < 8 || udp.readUInt16BE(2) !== port) continue;
    out.push(...splitSuperDatagram(udp.subarray(8)));
  }
  return out;
}

function splitSuperDatagram(blob: Buffer): Buffer[] {
  if (blob.length < 32) return [blob];
  const index = blob.readUInt32LE(4);
  const counter = blob.readBigUInt64LE(8);
  for (let size = 33; size + 16 <= blob.length; size++) {
    if (blob[size] !== blob[0] || blob.readUInt32LE(size + 4) !== index) continue;
    if (blob.readBigUInt64LE(size + 8) !== counter + 1n) continue;
    const parts: Buffer[] = [];
    for (let at = 0; at < blob.length; at += size)
      parts.push(Buffer.from(blob.subarray(at, Math.min(at + size, blob.length))));
    return parts;
  }
  return [Buffer.from(blob)];
}

export class UdpPair {
  readonly prefix = runPrefix('emudp');
  readonly nsA = `${this.prefix}a`;
  readonly nsB = `${this.prefix}b`;
  readonly vethA = `${this.prefix}va`;
  readonly vethB = `${this.prefix}vb`;
  nodeA!: UdpNode;
  nodeB!: UdpNode;
  /** The session in use: A's and B's halves. */
  keys = sessionKeys(100, 200);
  private readonly servers: ChildProcess[] = [];

  /** Builds both nodes with one session over the IPv4 underlay. Call close() even if this throws. */
  async start(
    opts: { tunMtu?: number; receiver?: 'thread' | 'loop' | 'auto'; tunReader?: 'thread' | 'loop' | 'auto' } = {},
  ): Promise<void> {
    await createNetns(this.nsA);
    await createNetns(this.nsB);
    await run('ip', [
      'link',
      'add',
      this.vethA,
      'netns',
      this.nsA,
      'type',
      'veth',
      'peer',
      'name',
      this.vethB,
      'netns',
      this.nsB,
    ]);
    await ipBatch(
      [
        `addr add ${LINK_A[4]}/24 dev ${this.vethA}`,
        `addr add ${LINK_A[6]}/64 dev ${this.vethA} nodad`,
        `link set ${this.vethA} up`,
      ],
      { netns: this.nsA },
    );
    await ipBatch(
      [
        `addr add ${LINK_B[4]}/24 dev ${this.vethB}`,
        `addr add ${LINK_B[6]}/64 dev ${this.vethB} nodad`,
        `link set ${this.vethB} up`,
      ],
      { netns: this.nsB },
    );
    const common = (me: Pods, peer: string, peerPods: Pods) => [
      ...['--tun', `${this.prefix}t`, '--address', `${me[4]}/32`, '--address', `${me[6]}/128`],
      ...['--local', `${me[4].replace(/\.1$/, '.0')}/24`, '--local', `${me[6].replace(/::1$/, '::')}/64`],
      ...['--peer', peer, '--peer-cidr', `${peerPods[4].replace(/\.1$/, '.0')}/24`],
      ...['--peer-cidr', `${peerPods[6].replace(/::1$/, '::')}/64`],
      ...['--bind', '::', '--port', String(UDP_PORT), '--mtu', String(opts.tunMtu ?? 1400)],
      ...['--receiver', opts.receiver ?? 'thread', '--tun-reader', opts.tunReader ?? 'thread'],
    ];
    this.nodeA = new UdpNode(this.nsA, common(POD_A, 'nodeB', POD_B));
    this.nodeB = new UdpNode(this.nsB, common(POD_B, 'nodeA', POD_A));
    await Promise.all([this.nodeA.ready, this.nodeB.ready]);
    await this.nodeA.addSession(this.keys.a, { ip: LINK_B[4], port: UDP_PORT });
    await this.nodeB.addSession(this.keys.b, { ip: LINK_A[4], port: UDP_PORT });
    await this.nodeA.command('use-session', { localIndex: this.keys.a.localIndex });
    await this.nodeB.command('use-session', { localIndex: this.keys.b.localIndex });
    for (const [family, port] of [
      [4, '5201'],
      [6, '5202'],
    ] as const) {
      this.servers.push(
        spawn('ip', ['netns', 'exec', this.nsB, 'iperf3', '-s', '-B', POD_B[family], '-p', port], { stdio: 'ignore' }),
      );
      for (let i = 0; ; i++) {
        const out = await run('ip', ['netns', 'exec', this.nsB, 'ss', '-ltnH', 'sport', '=', `:${port}`]);
        if (out.trim()) break;
        if (i === 50) throw new Error(`iperf3 server on ${POD_B[family]} did not start`);
        await sleep(100);
      }
    }
  }

  /** Points both sessions at the other side's IPv4 or IPv6 underlay address. */
  async useUnderlay(family: 4 | 6): Promise<void> {
    await this.nodeA.command('set-endpoint', {
      localIndex: this.keys.a.localIndex,
      endpoint: { ip: LINK_B[family], port: UDP_PORT },
    });
    await this.nodeB.command('set-endpoint', {
      localIndex: this.keys.b.localIndex,
      endpoint: { ip: LINK_A[family], port: UDP_PORT },
    });
  }

  /** Rekey: both sides add the new session, switch to it, and drop the old one after `graceMs`. */
  async rekey(indexA: number, indexB: number, graceMs: number): Promise<void> {
    const old = this.keys;
    const next = sessionKeys(indexA, indexB);
    await this.nodeB.addSession(next.b, { ip: LINK_A[4], port: UDP_PORT });
    await this.nodeA.addSession(next.a, { ip: LINK_B[4], port: UDP_PORT });
    await this.nodeA.command('use-session', { localIndex: indexA });
    await this.nodeB.command('use-session', { localIndex: indexB });
    this.keys = next;
    await sleep(graceMs);
    await this.nodeA.command('remove-session', { localIndex: old.a.localIndex });
    await this.nodeB.command('remove-session', { localIndex: old.b.localIndex });
  }

  /** iperf3 client A → B for `seconds` (TCP, or UDP at `udpBitrate`), calling `during` once it started. */
  async iperf(
    opts: { family: 4 | 6; seconds: number; udpBitrate?: string; length?: number },
    during?: () => Promise<void>,
  ): Promise<{ bitsPerSecond: number; bytes: number; lostPercent?: number }> {
    const port = opts.family === 4 ? '5201' : '5202';
    const args = ['netns', 'exec', this.nsA, 'iperf3', '-c', POD_B[opts.family], '-B', POD_A[opts.family], '-p', port];
    args.push('-t', String(opts.seconds), '-J');
    if (opts.udpBitrate) args.push('-u', '-b', opts.udpBitrate, '-l', String(opts.length ?? 1200));
    const client = run('ip', args, { timeoutMs: (opts.seconds + 40) * 1000 });
    await during?.();
    const report = JSON.parse(await client) as {
      end: {
        sum_received?: { bits_per_second: number; bytes: number };
        sum?: { bits_per_second: number; bytes: number; lost_percent: number };
      };
    };
    if (opts.udpBitrate) {
      const s = report.end.sum!;
      return { bitsPerSecond: s.bits_per_second, bytes: s.bytes, lostPercent: s.lost_percent };
    }
    return { bitsPerSecond: report.end.sum_received!.bits_per_second, bytes: report.end.sum_received!.bytes };
  }

  /** Both nodes' stats once the counters stop moving. */
  async settledStats(): Promise<[UdpNodeStats, UdpNodeStats]> {
    let last = '';
    for (let i = 0; i < 50; i++) {
      const pair: [UdpNodeStats, UdpNodeStats] = [await this.nodeA.stats(), await this.nodeB.stats()];
      const key = JSON.stringify(pair.map((s) => ({ ...s, cpuSeconds: 0 })));
      if (key === last) return pair;
      last = key;
      await sleep(200);
    }
    throw new Error('counters never settled');
  }

  /** Kills the processes and deletes both namespaces. Never throws. */
  async close(): Promise<void> {
    for (const c of [this.nodeA?.child, this.nodeB?.child, ...this.servers]) c?.kill('SIGKILL');
    await deleteNetns(this.nsA);
    await deleteNetns(this.nsB);
  }
}
