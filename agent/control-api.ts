// The agent's control API: HTTP over the unix socket <runDir>/agent.sock (root-only by
// file mode, like the docker or containerd sockets). `edgemesh-cni status` and
// `edgemesh-cni capture` are its clients.
import { chmod, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { AgentStatus } from './status.ts';

export interface CaptureRequest {
  /** Stop after this many seconds (default 10, max 3600). */
  seconds: number;
  /** Stop after this many packets (default 1000, max 1,000,000). */
  packets: number;
  /** Only packets to or from this peer node. */
  peer?: string;
  /** Only packets with this address as source or destination. */
  host?: string;
  /** Only this protocol: tcp, udp, icmp, icmpv6 or a number. */
  proto?: string;
}

export interface ControlHandlers {
  status(): AgentStatus;
  /** Writes a pcap of forwarded packets matching the request into `out`, then ends it. */
  capture(req: CaptureRequest, out: Writable, signal: AbortSignal): Promise<void>;
}

export class BadRequest extends Error {}

/** Validates the query of `GET /capture`. */
export function parseCaptureQuery(query: URLSearchParams): CaptureRequest {
  const num = (key: string, def: number, max: number) => {
    const raw = query.get(key);
    if (raw === null || raw === '') return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0 || n > max) throw new BadRequest(`${key}: expected a number in (0, ${max}]`);
    return n;
  };
  const proto = query.get('proto') || undefined;
  if (proto !== undefined && !/^(tcp|udp|icmp|icmpv6|\d{1,3})$/.test(proto)) {
    throw new BadRequest('proto: expected tcp, udp, icmp, icmpv6 or a protocol number');
  }
  return {
    seconds: num('seconds', 10, 3600),
    packets: Math.floor(num('packets', 1000, 1_000_000)),
    ...(query.get('peer') ? { peer: query.get('peer')! } : {}),
    ...(query.get('host') ? { host: query.get('host')! } : {}),
    ...(proto ? { proto } : {}),
  };
}

export interface ControlServer {
  close(): Promise<void>;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);
}

/**
 * Captures running at once (default): each holds up to its byte budget (dataplane/pcap.ts)
 * and costs the forwarder a filter call per packet, so their number is bounded too.
 */
export const MAX_CONCURRENT_CAPTURES = 2;

export async function startControlServer(
  socketPath: string,
  handlers: ControlHandlers,
  opts: { maxCaptures?: number } = {},
): Promise<ControlServer> {
  const maxCaptures = opts.maxCaptures ?? MAX_CONCURRENT_CAPTURES;
  const active = new Set<AbortController>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'only GET' });
    if (url.pathname === '/status') return sendJson(res, 200, handlers.status());
    if (url.pathname === '/capture') {
      let capture: CaptureRequest;
      try {
        capture = parseCaptureQuery(url.searchParams);
      } catch (err) {
        return sendJson(res, 400, { error: (err as Error).message });
      }
      if (active.size >= maxCaptures) {
        return sendJson(res, 429, {
          error: `${active.size} captures are already running (at most ${maxCaptures}); try again when one ends`,
        });
      }
      const abort = new AbortController();
      active.add(abort);
      // The client hanging up (Ctrl-C on `capture`) ends the capture.
      res.on('close', () => abort.abort());
      // Headers go out with the first pcap bytes, so a capture that cannot start (no
      // dataplane yet) still gets a proper error status.
      res.setHeader('content-type', 'application/vnd.tcpdump.pcap');
      handlers
        .capture(capture, res, abort.signal)
        .catch((err: Error) => {
          if (!res.headersSent) {
            res.removeHeader('content-type');
            sendJson(res, 503, { error: err.message });
          } else res.destroy(err);
        })
        .finally(() => active.delete(abort));
      return;
    }
    sendJson(res, 404, { error: 'not found: GET /status or GET /capture' });
  });
  // A socket file left by a killed agent would make listen() fail with EADDRINUSE.
  await rm(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(socketPath, 0o600);
  return {
    close: async () => {
      for (const a of active) a.abort();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(socketPath, { force: true });
    },
  };
}

export class ControlApiError extends Error {}

function get(socketPath: string, path: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET' }, resolve);
    req.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? 'is the agent running? (wrong --run-dir?)'
          : err.code === 'EACCES'
            ? 'permission denied (run as root)'
            : err.message;
      reject(new ControlApiError(`cannot reach the agent at ${socketPath}: ${why}`));
    });
    req.end();
  });
}

async function readBody(res: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of res) text += chunk;
  return text;
}

async function failure(res: IncomingMessage): Promise<ControlApiError> {
  const text = await readBody(res);
  let message = text;
  try {
    message = (JSON.parse(text) as { error?: string }).error ?? text;
  } catch {
    // not JSON: use the text as it is
  }
  return new ControlApiError(`agent answered ${res.statusCode}: ${message.trim()}`);
}

export async function fetchStatus(socketPath: string): Promise<AgentStatus> {
  const res = await get(socketPath, '/status');
  if (res.statusCode !== 200) throw await failure(res);
  return JSON.parse(await readBody(res)) as AgentStatus;
}

/** Streams a capture into `out`; resolves when the agent ends it. */
export async function fetchCapture(socketPath: string, capture: Partial<CaptureRequest>, out: Writable): Promise<void> {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(capture)) if (v !== undefined) query.set(k, String(v));
  const res = await get(socketPath, `/capture?${query}`);
  if (res.statusCode !== 200) throw await failure(res);
  await pipeline(res, out);
}
