// A checksummed TCP transfer between two pods, run inside their namespaces by the tests:
//   node transfer-peer.ts serve <port>                       → prints {"bytes","sha256"} when the sender closes
//   node transfer-peer.ts send <ip> <port> <bytes> <KiB/s>    → prints {"bytes","sha256"} of what it sent
// The data is pseudo-random (seeded), paced so the transfer spans an agent restart.
import { createHash } from 'node:crypto';
import { connect, createServer } from 'node:net';

const [mode, ...args] = process.argv.slice(2);

if (mode === 'serve') {
  const port = Number(args[0]);
  const server = createServer((socket) => {
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('data', (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
    });
    socket.on('end', () => {
      process.stdout.write(`${JSON.stringify({ bytes, sha256: hash.digest('hex') })}\n`);
      socket.end();
      server.close();
    });
  });
  server.listen(port, () => process.stdout.write('listening\n'));
} else if (mode === 'send') {
  const [ip, port, total, kibPerSec] = [args[0]!, Number(args[1]), Number(args[2]), Number(args[3])];
  const hash = createHash('sha256');
  let state = 0x2545f491;
  const chunk = () => {
    const buf = Buffer.allocUnsafe(16 * 1024);
    for (let i = 0; i < buf.length; i += 4) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      buf.writeInt32LE(state | 0, i);
    }
    return buf;
  };
  const socket = connect({ host: ip, port });
  socket.setKeepAlive(false);
  let sent = 0;
  const intervalMs = ((16 * 1024) / (kibPerSec * 1024)) * 1000;
  socket.on('connect', () => {
    const timer = setInterval(() => {
      if (sent >= total) {
        clearInterval(timer);
        socket.end();
        return;
      }
      const buf = chunk().subarray(0, Math.min(16 * 1024, total - sent));
      hash.update(buf);
      sent += buf.length;
      socket.write(buf);
    }, intervalMs);
  });
  socket.on('close', () => process.stdout.write(`${JSON.stringify({ bytes: sent, sha256: hash.digest('hex') })}\n`));
  socket.on('error', (err) => {
    process.stderr.write(`send failed: ${err.message}\n`);
    process.exit(1);
  });
}
