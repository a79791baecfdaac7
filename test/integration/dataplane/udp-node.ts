// One dataplane node for the UDP session integration tests and the bench: a real TUN, a
// Forwarder, and one peer reached through a UdpDataSocket session (keys given by the test:
// key exchange is the overlay's). Run inside a namespace:
//
//   ip netns exec NS node test/integration/dataplane/udp-node.ts --tun NAME --address 10.201.0.1/32 \
//     --local 10.201.0.0/24 --peer nodeB --peer-cidr 10.202.0.0/24 --bind :: --port 7000 [--mtu 1400]
//     [--receiver thread|loop|auto] [--tun-reader thread|loop|auto] [--tun-write-burst N] [--coalesce 0|1]
//
// Control: one command per stdin line, "<id> <command> [json]"; replies are JSON lines on
// stdout ({"id":..,"result":..} or {"id":..,"error":..}); events are {"event":..}.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { configureInterface, ensureRoute } from '../../../common/host-net/index.ts';
import { Forwarder } from '../../../dataplane/forwarder.ts';
import { TunDevice, type TunReader } from '../../../dataplane/tun-device.ts';
import { UdpSessionLink } from '../../../dataplane/udp-link.ts';
import { relayAllocateDatagram } from '../../../dataplane/udp-relay.ts';
import { UdpDataSocket, type UdpEndpoint } from '../../../dataplane/udp-session.ts';

const { values: args } = parseArgs({
  options: {
    tun: { type: 'string' },
    address: { type: 'string', multiple: true },
    local: { type: 'string', multiple: true },
    peer: { type: 'string' },
    'peer-cidr': { type: 'string', multiple: true },
    bind: { type: 'string', default: '::' },
    port: { type: 'string', default: '0' },
    offload: { type: 'string', default: '1' },
    mtu: { type: 'string', default: '1400' },
    receiver: { type: 'string', default: 'thread' },
    'tun-reader': { type: 'string', default: 'thread' },
    'tun-write-burst': { type: 'string', default: '0' },
    coalesce: { type: 'string', default: '1' },
  },
});

function list(name: 'address' | 'local' | 'peer-cidr'): string[] {
  const v = args[name];
  if (!v || v.length === 0) throw new Error(`udp-node: --${name} is required`);
  return v;
}

const log = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));
const peerName = args.peer ?? 'peer';
const tun = TunDevice.open({
  name: args.tun!,
  offload: args.offload !== '0',
  mtu: Number(args.mtu),
  reader: args['tun-reader'] as TunReader,
  writeBurst: Number(args['tun-write-burst']),
});
const addresses = list('address');
await configureInterface({ dev: tun.name, address: addresses });
const isV6 = (s: string) => s.includes(':');
for (const dst of list('peer-cidr')) {
  const src = addresses.find((a) => isV6(a) === isV6(dst));
  // A fresh IPv6 address is tentative (DAD) for a moment: as a route source it is refused until then.
  for (let attempt = 0; ; attempt++) {
    try {
      await ensureRoute({ dst, dev: tun.name, ...(src ? { src: src.split('/')[0]! } : {}) });
      break;
    } catch (err) {
      if (attempt >= 50 || !String(err).includes('Invalid source address')) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const fwd = new Forwarder({ tun, localCidrs: list('local'), logger: log.child({ component: 'forwarder' }) });
fwd.setPeer(peerName, list('peer-cidr'));
let controls = 0;
const socket = UdpDataSocket.open({
  bind: args.bind!,
  port: Number(args.port),
  onPackets: (_index, packets) => fwd.receivePackets(peerName, packets),
  onControl: () => {
    controls++;
  },
  onError: (err) => log.error({ err: String(err) }, 'handler failed'),
  receiver: args.receiver as 'thread' | 'loop' | 'auto',
  coalesce: args.coalesce !== '0',
});
let link: UdpSessionLink | undefined;
// The attacker's socket: a separate port in this namespace, for replayed and forged datagrams.
const attacker = dgram.createSocket({ type: 'udp6' });
await new Promise<void>((r) => attacker.bind(0, '::', r));

function emit(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const hex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'));
const mapped = (ip: string) => (isV6(ip) ? ip : `::ffff:${ip}`);

async function inject(to: UdpEndpoint, datagrams: Uint8Array[]): Promise<number> {
  let sent = 0;
  for (const d of datagrams) {
    await new Promise<void>((resolve) =>
      attacker.send(d, to.port, mapped(to.ip), (err) => {
        if (!err) sent++;
        resolve();
      }),
    );
  }
  return sent;
}

interface SessionArg {
  localIndex: number;
  remoteIndex: number;
  txKey: string;
  rxKey: string;
  endpoint?: UdpEndpoint;
}

// Each command parses its own JSON argument shape (test-only protocol).
// biome-ignore lint/suspicious/noExplicitAny: the argument is whatever JSON the test sent
const commands: Record<string, (arg: any) => unknown> = {
  stats: () => ({
    forwarder: fwd.stats(),
    tun: tun.stats(),
    udp: socket.stats(),
    controls,
    cpuSeconds: (() => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    })(),
  }),
  'add-session': (a: SessionArg) => {
    socket.addSession(
      { localIndex: a.localIndex, remoteIndex: a.remoteIndex, txKey: hex(a.txKey), rxKey: hex(a.rxKey) },
      a.endpoint,
    );
    return true;
  },
  // Transmit with this session from now on (the first call attaches the link).
  'use-session': (a: { localIndex: number }) => {
    if (link) link.useSession(a.localIndex);
    else {
      link = new UdpSessionLink(socket, a.localIndex);
      fwd.attachLink(peerName, link);
    }
    return true;
  },
  'set-endpoint': (a: { localIndex: number; endpoint: UdpEndpoint }) => {
    socket.setEndpoint(a.localIndex, a.endpoint);
    return true;
  },
  // Registers this socket with a relay binding: { relay, bindingId, member, token (hex), indexes }.
  'relay-allocate': (a: { relay: UdpEndpoint; bindingId: number; member: 0 | 1; token: string; indexes: number[] }) =>
    socket.sendRelayAllocate(
      a.relay,
      relayAllocateDatagram({ token: hex(a.token), bindingId: a.bindingId, member: a.member, indexes: a.indexes }),
    ),
  'remove-session': (a: { localIndex: number }) => socket.removeSession(a.localIndex),
  session: (a: { localIndex: number }) => {
    const s = socket.session(a.localIndex);
    return s ? { ...s, txCounter: Number(s.txCounter) } : null;
  },
  'set-link-mtu': (a: { mtu: number }) => {
    if (!link) throw new Error('no link');
    link.setMtu(a.mtu);
    return link.mtu;
  },
  'send-control': (a: { localIndex: number; message: string }) => socket.sendControl(a.localIndex, hex(a.message)),
  // Datagrams from the attacker socket: { to, datagrams: hex[] } or { to, file } (one hex datagram per line).
  inject: (a: { to: UdpEndpoint; datagrams?: string[]; file?: string }) => {
    const lines = a.file ? readFileSync(a.file, 'utf8').split('\n').filter(Boolean) : (a.datagrams ?? []);
    return inject(a.to, lines.map(hex));
  },
};

createInterface({ input: process.stdin }).on('line', async (line) => {
  const trimmed = line.trim();
  const space = trimmed.indexOf(' ');
  const rest = trimmed.slice(space + 1);
  const space2 = rest.indexOf(' ');
  const id = trimmed.slice(0, space);
  const cmd = space2 < 0 ? rest : rest.slice(0, space2);
  const json = space2 < 0 ? '' : rest.slice(space2 + 1);
  try {
    const handler = commands[cmd];
    if (!handler) throw new Error(`unknown command ${cmd}`);
    emit({ id, result: await handler(json ? JSON.parse(json) : undefined) });
  } catch (err) {
    emit({ id, error: String(err) });
  }
});

function shutdown(): void {
  socket.close();
  attacker.close();
  tun.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown);
emit({ event: 'ready', port: socket.port, tun: tun.name, mtu: tun.mtu });
