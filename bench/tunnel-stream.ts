// One tunnel stream (TCP + noise + yamux + the frame reader) between two libp2p hosts on
// loopback, frames of a given size offered as the forwarder offers them: a few frames per
// event-loop turn (one per TUN batch), as fast as the bounded queue accepts them.
// The receiver counts whole frames. Both hosts share this process (one core), so the
// figure is a per-byte cost, comparable run to run, not a link speed.
// Run: node bench/tunnel-stream.ts [--size 1400] [--seconds 3] [--per-turn 4] [--module overlay/tunnel.ts]
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeFrame, FRAME_HEADER_LEN, PACKET_HEADER_LEN } from '../dataplane/frame-codec.ts';
import type { Host } from '../overlay/host.ts';
import { loopbackHosts } from '../test/support/loopback-hosts.ts';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1400' },
    seconds: { type: 'string', default: '3' },
    'per-turn': { type: 'string', default: '4' },
    module: { type: 'string', default: 'overlay/tunnel.ts' },
  },
});
const size = Number(values.size);
const seconds = Number(values.seconds);
const perTurn = Number(values['per-turn']);
const tunnel: typeof import('../overlay/tunnel.ts') = await import(resolve(import.meta.dirname, '..', values.module));

const hosts = (await loopbackHosts(2)) as [Host, Host];
const [a, b] = hosts;
let rxBytes = 0;
await b.handle(tunnel.TUNNEL_PROTOCOL, (stream, connection) => {
  new tunnel.TunnelStream({
    stream,
    connection,
    localCaps: { offload: false },
    onFrame: (f) => {
      rxBytes += f.length;
    },
    onClose: () => {},
  });
});
const conn = await a.dial(b.getMultiaddrs()[0]!);
const sender = new tunnel.TunnelStream({
  stream: await conn.newStream(tunnel.TUNNEL_PROTOCOL),
  connection: conn,
  localCaps: { offload: false },
  onFrame: () => {},
  onClose: () => {},
  maxQueueBytes: 4 * 1024 * 1024,
});
await sender.ready;
// A real frame (one packet) of `size` bytes: the reader cuts the stream at its header.
const frame = encodeFrame([
  { vnet: new Uint8Array(0), data: new Uint8Array(size - FRAME_HEADER_LEN - PACKET_HEADER_LEN) },
]);
const t0 = performance.now();
const end = t0 + seconds * 1000;
let accepted = 0;
await new Promise<void>((done) => {
  const turn = () => {
    if (performance.now() >= end) return done();
    for (let i = 0; i < perTurn; i++) if (sender.send(frame)) accepted += size;
    setImmediate(turn);
  };
  turn();
});
while (rxBytes < accepted && performance.now() - t0 < (seconds + 20) * 1000) await new Promise((r) => setTimeout(r, 2));
const ms = performance.now() - t0;
console.log(
  `${values.module} size ${size} × ${perTurn}/turn: ${((rxBytes * 8) / ms / 1e6).toFixed(3)} Gbit/s, ` +
    `${Math.round(rxBytes / size / (ms / 1000))} frames/s, dropped ${sender.drops}`,
);
await Promise.all([a.stop(), b.stop()]);
process.exit(0);
