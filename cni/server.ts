// The agent's end of the thin client: a unix socket (dir 0700, socket 0600: only root may
// drive the plugin) serving one CNI request per connection, many connections at once.
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { type Logger, silentLogger } from '../common/log.ts';
import type { CniPlugin, CniResponse } from './plugin.ts';
import { CniError, ErrorCode, errorResult, LATEST_VERSION } from './spec.ts';
import { encodeFrame, FrameReader, MAX_REQUEST_BYTES } from './wire.ts';

export interface CniServerOptions {
  socketPath: string;
  plugin: Pick<CniPlugin, 'handle'>;
  logger?: Logger;
  /** Requests handled at once; more are answered "try again later" (11) instead of queueing without bound. */
  maxInFlight?: number;
  /** A client that has not sent its whole request within this time is dropped. */
  requestTimeoutMs?: number;
}

export interface CniServer {
  close(): Promise<void>;
}

function errorResponse(code: number, msg: string): CniResponse {
  return {
    exitCode: 1,
    stdout: `${JSON.stringify(errorResult(new CniError(code, msg), LATEST_VERSION))}\n`,
    stderr: '',
  };
}

/** True when something is accepting connections on `path` (i.e. the socket is not stale). */
function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    const st = await lstat(path);
    if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (await socketAlive(path)) throw new Error(`another process is already serving CNI requests on ${path}`);
  await unlink(path);
}

export async function startCniServer(opts: CniServerOptions): Promise<CniServer> {
  const log = opts.logger ?? silentLogger();
  const maxInFlight = opts.maxInFlight ?? 256;
  const timeoutMs = opts.requestTimeoutMs ?? 10_000;
  let inFlight = 0;
  const sockets = new Set<Socket>();

  await mkdir(dirname(opts.socketPath), { recursive: true, mode: 0o700 });
  await removeStaleSocket(opts.socketPath);

  const serve = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.setTimeout(timeoutMs, () => socket.destroy());
    const reader = new FrameReader(MAX_REQUEST_BYTES);
    let done = false;
    const reply = (response: CniResponse) => {
      if (!socket.destroyed) socket.end(encodeFrame(response));
    };
    socket.on('data', (chunk: Buffer) => {
      if (done) return;
      let body: Buffer | undefined;
      try {
        body = reader.push(chunk);
      } catch (err) {
        done = true;
        log.warn({ err: (err as Error).message }, 'CNI request rejected');
        reply(errorResponse(ErrorCode.IoFailure, (err as Error).message));
        return;
      }
      if (!body) return;
      done = true;
      socket.setTimeout(0);
      let request: { env?: Record<string, string>; stdin?: string };
      try {
        request = JSON.parse(body.toString('utf8'));
      } catch {
        reply(errorResponse(ErrorCode.DecodingFailure, 'request from the CNI client is not valid JSON'));
        return;
      }
      if (inFlight >= maxInFlight) {
        reply(errorResponse(ErrorCode.TryAgainLater, `edgemesh agent is busy (${inFlight} CNI requests in flight)`));
        return;
      }
      inFlight++;
      const env = typeof request.env === 'object' && request.env !== null ? request.env : {};
      opts.plugin
        .handle({ env, stdin: typeof request.stdin === 'string' ? request.stdin : '' })
        .then(reply, (err: unknown) => reply(errorResponse(ErrorCode.Internal, String(err))))
        .finally(() => {
          inFlight--;
        });
    });
  };

  // allowHalfOpen: the client shuts down its sending side after the request and still awaits the reply.
  const server = createServer({ allowHalfOpen: true }, serve);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(opts.socketPath, 0o600);
  log.info({ socket: opts.socketPath }, 'CNI server listening');

  return {
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      await unlink(opts.socketPath).catch(() => undefined);
    },
  };
}
