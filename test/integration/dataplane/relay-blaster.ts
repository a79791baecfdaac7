// Traffic for many relay bindings at once (the relay's memory test and bench): one UDP socket
// per binding (its own endpoint, as one member each), each registered with its allocate
// datagram, then datagrams shaped like sealed session data (the relay never opens them)
// sent round-robin over every binding for a while. Prints {"sent":n} at the end. The side that
// only receives just registers and counts.
//
//   node relay-blaster.ts --relay IP:PORT --grants FILE (JSON: [{bindingId, member, token, index}])
//     [--seconds 3] [--size 1200] [--listen]
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { relayAllocateDatagram } from '../../../dataplane/udp-relay.ts';

const { values: args } = parseArgs({
  options: {
    relay: { type: 'string' },
    grants: { type: 'string' },
    seconds: { type: 'string', default: '3' },
    size: { type: 'string', default: '1200' },
    listen: { type: 'boolean', default: false },
  },
});
const at = args.relay!.lastIndexOf(':');
const relayIp = args.relay!.slice(0, at);
const relayPort = Number(args.relay!.slice(at + 1));
const grants = JSON.parse(readFileSync(args.grants!, 'utf8')) as {
  bindingId: number;
  member: 0 | 1;
  token: string;
  index: number;
}[];

const sockets = await Promise.all(
  grants.map(async (g) => {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, r));
    return { s, g };
  }),
);
let received = 0;
for (const { s, g } of sockets) {
  s.on('message', () => received++);
  const d = relayAllocateDatagram({
    token: Buffer.from(g.token, 'hex'),
    bindingId: g.bindingId,
    member: g.member,
    indexes: [g.index],
  });
  s.send(d, relayPort, relayIp);
}
process.stdout.write(`${JSON.stringify({ event: 'registered' })}\n`);

if (args.listen) {
  process.stdin.on('end', () => {
    process.stdout.write(`${JSON.stringify({ received })}\n`);
    process.exit(0);
  });
  process.stdin.resume();
} else {
  await new Promise((r) => setTimeout(r, 300));
  const size = Number(args.size);
  const until = Date.now() + Number(args.seconds) * 1000;
  let sent = 0;
  let counter = 0n;
  while (Date.now() < until) {
    // one round over every binding, then yield so the sends drain (dgram queues in libuv)
    await Promise.all(
      sockets.map(
        ({ s, g }) =>
          new Promise<void>((resolve) => {
            const d = Buffer.alloc(size);
            d[0] = 4;
            d.writeUInt32LE(g.index, 4);
            d.writeBigUInt64LE(counter, 8);
            s.send(d, relayPort, relayIp, () => {
              sent++;
              resolve();
            });
          }),
      ),
    );
    counter++;
  }
  process.stdout.write(`${JSON.stringify({ sent, received })}\n`);
  for (const { s } of sockets) s.close();
}
