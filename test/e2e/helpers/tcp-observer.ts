// A tiny TCP tool run inside lab namespaces (`node tcp-observer.ts ...`) to see what a NAT does:
//   serve <port>                       answers every connection with "<remote ip>:<remote port>\n"
//   connect <host> <port> [localPort]  prints the server's answer (the source it observed)
// The server prints "listening" once bound so the test knows when to connect.
import { connect, createServer } from 'node:net';

const [mode, a, b, c] = process.argv.slice(2);

if (mode === 'serve') {
  const server = createServer((socket) => {
    socket.end(`${socket.remoteAddress}:${socket.remotePort}\n`);
  });
  server.listen(Number(a), '0.0.0.0', () => process.stdout.write('listening\n'));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
} else if (mode === 'connect') {
  const socket = connect({ host: a!, port: Number(b), ...(c ? { localPort: Number(c) } : {}), timeout: 3000 });
  let answer = '';
  socket.setEncoding('utf8').on('data', (d: string) => {
    answer += d;
  });
  socket.on('end', () => {
    process.stdout.write(answer);
    process.exit(0);
  });
  socket.on('timeout', () => {
    process.stderr.write('timeout\n');
    process.exit(2);
  });
  socket.on('error', (err) => {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  });
} else {
  process.stderr.write('usage: tcp-observer.ts serve <port> | connect <host> <port> [localPort]\n');
  process.exit(64);
}
