// Process entry of the Kubernetes API test server, for the lab (run inside a namespace):
//   node lab/kube-apiserver/main.ts --listen 0.0.0.0:6443 [--kubeconfig-out PATH] [--server-url URL]
// Prints one JSON line {"ready":true,"url":...} on stdout when listening; exits on SIGTERM/SIGINT.
import { Command } from 'commander';
import { pino } from 'pino';
import { startApiServer } from './server.ts';

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]+)$/.exec(value);
  if (!m) throw new Error(`--listen must be HOST:PORT, got "${value}"`);
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

const program = new Command()
  .name('kube-apiserver-lab')
  .option('--listen <host:port>', 'address to listen on', '127.0.0.1:6443')
  .option('--kubeconfig-out <path>', 'write a kubeconfig for this server to PATH')
  .option('--server-url <url>', 'server URL to put in the kubeconfig (default: the listen address)')
  .option('--history-limit <n>', 'watch history kept per resource', '1000')
  .parse();

const opts = program.opts<{ listen: string; kubeconfigOut?: string; serverUrl?: string; historyLimit: string }>();
// Logs go to stderr so that stdout carries only the ready line the lab waits for.
const log = pino(
  { level: process.env.EDGEMESH_LOG_LEVEL ?? 'info', base: { component: 'kube-apiserver', pid: process.pid } },
  pino.destination(2),
);
try {
  const { host, port } = parseListen(opts.listen);
  const historyLimit = Number(opts.historyLimit);
  if (!Number.isInteger(historyLimit) || historyLimit < 1) {
    throw new Error(`--history-limit must be a positive integer, got "${opts.historyLimit}"`);
  }
  const server = await startApiServer({ host, port, logger: log, historyLimit });
  if (opts.kubeconfigOut) await server.writeKubeconfig(opts.kubeconfigOut, 'lab-admin', opts.serverUrl ?? server.url);
  process.stdout.write(`${JSON.stringify({ ready: true, url: server.url, port: server.port })}\n`);
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping');
    server.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
} catch (err) {
  process.stderr.write(`kube-apiserver: ${(err as Error).message}\n`);
  process.exit(1);
}
