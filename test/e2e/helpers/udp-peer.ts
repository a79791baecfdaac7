// A tiny UDP endpoint run inside a lab namespace (`node udp-peer.ts <port> [--reflect]`) to
// see what a NAT does with datagrams, without any agent:
//   stdin   JSON lines {"to":"ip:port","data":"text"}: send one datagram from the bound port
//   stdout  "ready" once bound, then one JSON line {"from":"ip:port","data":"text"} per
//           datagram received (whatever its source: unsolicited ones show up too)
//   --reflect  also answer every datagram with "seen <ip>:<port>", the source as observed
//              (what a STUN-like reflector tells a node about its NAT mapping)
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const port = Number(process.argv[2]);
const reflect = process.argv.includes('--reflect');
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write('usage: udp-peer.ts <port> [--reflect]\n');
  process.exit(64);
}

const socket = createSocket('udp4');
socket.on('message', (msg, rinfo) => {
  const from = `${rinfo.address}:${rinfo.port}`;
  const data = msg.toString('utf8');
  process.stdout.write(`${JSON.stringify({ from, data })}\n`);
  if (reflect && !data.startsWith('seen ')) socket.send(`seen ${from}`, rinfo.port, rinfo.address);
});
socket.on('error', (err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
socket.bind(port, '0.0.0.0', () => process.stdout.write('ready\n'));

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as { to: string; data: string };
  const colon = cmd.to.lastIndexOf(':');
  socket.send(cmd.data, Number(cmd.to.slice(colon + 1)), cmd.to.slice(0, colon));
});
// The test closes stdin (or kills us) when done.
process.stdin.on('end', () => socket.close(() => process.exit(0)));
