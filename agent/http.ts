// The agent's HTTP endpoint for Prometheus and the kubelet's probes: /metrics, /healthz
// (the process is alive and its loops turn), /readyz (the node is set up: CNI can serve).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface HttpEndpoints {
  registry: Registry;
  /** null when healthy, else the reason. */
  unhealthy(): string | null;
  /** null when ready, else what is still missing. */
  notReady(): string | null;
}

export interface HttpServerHandle {
  port: number;
  close(): Promise<void>;
}

function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

export async function startHttpServer(listen: string, endpoints: HttpEndpoints): Promise<HttpServerHandle> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      endpoints.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': endpoints.registry.contentType }).end(body),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
      );
      return;
    }
    const probe = path === '/healthz' ? endpoints.unhealthy() : path === '/readyz' ? endpoints.notReady() : undefined;
    if (probe === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz\n');
      return;
    }
    res
      .writeHead(probe === null ? 200 : 503, { 'content-type': 'text/plain' })
      .end(probe === null ? 'ok\n' : `${probe}\n`);
  });
  const { host, port } = splitHostPort(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
