// One dataplane node for the forwarder integration tests and benchmarks: a real TUN, a
// Forwarder, and one peer reached over a plain TCP socket carrying the frame codec (what
// the overlay's libp2p stream carries in the product). Run inside a namespace:
//
//   ip netns exec NS node test/support/forwarder-node.ts --tun NAME --address 10.201.0.1/32 \
//     --local 10.201.0.0/24 --peer nodeB --peer-cidr 10.202.0.0/24 (--listen IP:PORT | --connect IP:PORT)
//     [--offload 0|1] [--mtu 1400]
// --address, --local and --peer-cidr repeat (one per family, e.g. 10.201.0.1/32 and fd00:201::1/128).
//
// Control: one command per stdin line, "<id> <command> [arg]"; replies are JSON lines on
// stdout ({"id":..,"result":..} or {"id":..,"error":..}); events are {"event":..}. Logs go to stderr.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { configureInterface, ensureRoute } from '../../common/host-net/index.ts';
import { Forwarder } from '../../dataplane/forwarder.ts';
import { encodeFrame, FrameError } from '../../dataplane/frame-codec.ts';
import { PacketCapture } from '../../dataplane/pcap.ts';
import { TunDevice } from '../../dataplane/tun-device.ts';
import type { Packet, PeerLink } from '../../dataplane/types.ts';

/** PeerLink over a net.Socket: writes while the socket takes them, then a bounded queue until 'drain'. */
export class SocketLink implements PeerLink {
  readonly socket: net.Socket;
  readonly maxQueuedBytes: number;
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private waitingForDrain = false;
  dropped = 0;

  constructor(socket: net.Socket, maxQueuedBytes = 8 * 1024 * 1024) {
    this.socket = socket;
    this.maxQueuedBytes = maxQueuedBytes;
    socket.on('drain', () => this.flush());
  }

  send(frame: Uint8Array): boolean {
    if (this.socket.destroyed) return false;
    if (!this.waitingForDrain) {
      if (!this.socket.write(frame)) this.waitingForDrain = true;
      return true;
    }
    if (this.queuedBytes + frame.length > this.maxQueuedBytes) {
      this.dropped++;
      return false;
    }
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    return true;
  }

  get queued(): number {
    return this.queuedBytes;
  }

  private flush(): void {
    this.waitingForDrain = false;
    while (this.queue.length > 0) {
      const frame = this.queue.shift()!;
      this.queuedBytes -= frame.length;
      if (!this.socket.write(frame)) {
        this.waitingForDrain = true;
        return;
      }
    }
  }
}

const { values: args } = parseArgs({
  options: {
    tun: { type: 'string' },
    address: { type: 'string', multiple: true },
    local: { type: 'string', multiple: true },
    peer: { type: 'string' },
    'peer-cidr': { type: 'string', multiple: true },
    listen: { type: 'string' },
    connect: { type: 'string' },
    offload: { type: 'string', default: '1' },
    mtu: { type: 'string', default: '1400' },
  },
});

function required(name: 'tun' | 'peer'): string {
  const v = args[name];
  if (typeof v !== 'string' || v === '') throw new Error(`forwarder-node: --${name} is required`);
  return v;
}

function requiredList(name: 'address' | 'local' | 'peer-cidr'): string[] {
  const v = args[name];
  if (!v || v.length === 0) throw new Error(`forwarder-node: --${name} is required`);
  return v;
}

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));
const peerName = required('peer');
const localCidrs = requiredList('local');
const peerCidrs = requiredList('peer-cidr');
const tun = TunDevice.open({ name: required('tun'), offload: args.offload !== '0', mtu: Number(args.mtu) });
const addresses = requiredList('address');
await configureInterface({ dev: tun.name, address: addresses });
const isV6 = (s: string) => s.includes(':');
for (const dst of peerCidrs) {
  const src = addresses.find((a) => isV6(a) === isV6(dst));
  await ensureRoute({ dst, dev: tun.name, ...(src ? { src: src.split('/')[0]! } : {}) });
}

const fwd = new Forwarder({ tun, localCidrs, logger: log.child({ component: 'forwarder' }) });
fwd.setPeer(peerName, peerCidrs);

let link: SocketLink | undefined;
let linkUps = 0;
let capture: PacketCapture | undefined;

function emit(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function adopt(socket: net.Socket): void {
  socket.setNoDelay(true);
  if (link) link.socket.destroy();
  const mine = new SocketLink(socket);
  link = mine;
  linkUps++;
  fwd.attachLink(peerName, mine);
  emit({ event: 'link-up', count: linkUps });
  socket.on('data', (chunk: Buffer) => {
    try {
      fwd.receive(peerName, chunk);
    } catch (err) {
      // Garbled stream: reset it, as the overlay resets a libp2p stream.
      if (!(err instanceof FrameError)) log.error({ err: String(err) }, 'receive failed');
      socket.destroy();
    }
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    if (link !== mine) return;
    link = undefined;
    fwd.detachLink(peerName);
    emit({ event: 'link-down' });
    if (args.connect) setTimeout(dial, 100);
  });
}

function dial(): void {
  const { host, port } = hostPort(args.connect!);
  const s = net.connect({ host, port });
  const retry = () => {
    s.destroy();
    setTimeout(dial, 100);
  };
  s.once('error', retry);
  s.once('connect', () => {
    s.removeListener('error', retry); // from now on 'close' re-dials, once
    adopt(s);
  });
}

let server: net.Server | undefined;
if (args.listen) {
  const { host, port } = hostPort(args.listen);
  server = net.createServer(adopt);
  await new Promise<void>((resolve, reject) => {
    server!.once('error', reject);
    server!.listen(port, host, resolve);
  });
} else if (args.connect) {
  dial();
} else {
  throw new Error('forwarder-node: --listen or --connect is required');
}

/** An IPv4 UDP packet with a valid header (the policy, not the parser, must refuse it). */
function udp4(src: string, dst: string): Uint8Array {
  const p = new Uint8Array(36);
  const dv = new DataView(p.buffer);
  p[0] = 0x45;
  dv.setUint16(2, p.length);
  p[8] = 64;
  p[9] = 17;
  p.set(src.split('.').map(Number), 12);
  p.set(dst.split('.').map(Number), 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += dv.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  dv.setUint16(10, ~sum & 0xffff);
  dv.setUint16(24, 16);
  return p;
}

const plain = (data: Uint8Array): Packet => ({ vnet: new Uint8Array(10), data });

function firstAddress(cidr: string, host: number): string {
  const [a, b, c] = cidr.split('/')[0]!.split('.');
  return `${a}.${b}.${c}.${host}`;
}

const commands: Record<string, (arg?: string) => unknown> = {
  stats: () => ({
    forwarder: fwd.stats(),
    tun: tun.stats(),
    link: link ? { queuedBytes: link.queued, dropped: link.dropped } : null,
    linkUps,
    /** CPU seconds this process has used (user + system), for CPU-per-GB figures. */
    cpuSeconds: (() => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    })(),
  }),
  'capture-start': () => {
    capture = new PacketCapture({ maxPackets: 50_000, maxSeconds: 120, snaplen: 128 });
    fwd.addCapture(capture);
    return true;
  },
  'capture-stop': (file) => {
    if (!capture || !file) throw new Error('no capture running, or no file given');
    capture.stop();
    fwd.removeCapture(capture);
    writeFileSync(file, capture.toBuffer());
    return capture.packets;
  },
  // A valid frame of packets the peer's policy or parser must drop: a spoofed source, a
  // transit destination, a bad IP version, a truncated packet.
  'inject-bad-packets': () => {
    if (!link) throw new Error('no link');
    const mine = firstAddress(localCidrs.find((c) => !isV6(c))!, 9);
    const theirs = firstAddress(peerCidrs.find((c) => !isV6(c))!, 1);
    const badVersion = udp4(mine, theirs);
    badVersion[0] = 0x55;
    const frame = encodeFrame([
      plain(udp4('192.0.2.7', theirs)),
      plain(udp4(mine, '198.51.100.7')),
      plain(badVersion),
      plain(udp4(mine, theirs).subarray(0, 30)),
    ]);
    return link.send(frame);
  },
  // Bytes that are not a frame, written at a frame boundary: the peer must reset the stream.
  'inject-garbage': () => {
    if (!link) throw new Error('no link');
    const garbage = randomBytes(64);
    garbage[0] = 0xff; // never the frame magic
    return link.send(garbage);
  },
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const [id, cmd, arg] = line.trim().split(/\s+/);
  const handler = commands[cmd ?? ''];
  try {
    if (!handler) throw new Error(`unknown command ${cmd}`);
    emit({ id, result: handler(arg) });
  } catch (err) {
    emit({ id, error: String(err) });
  }
});

function shutdown(): void {
  server?.close();
  link?.socket.destroy();
  tun.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown); // the test runner went away: do not linger
emit({ event: 'ready', tun: tun.name, offload: tun.offload, offloadFlags: tun.offloadFlags, mtu: tun.mtu });
