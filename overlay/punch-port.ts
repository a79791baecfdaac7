// Each node punches (and later carries UDP data) from its own port. A cluster-wide fixed
// port works for one node per NAT only: Linux MASQUERADE keeps a source port only while the
// (src, dst) tuple is free, so two nodes behind one NAT punching from the same port to the
// same peer collide (EADDRNOTAVAIL / remapped port). The port is chosen at random on first
// start and kept beside the node key, so peers' cached annotations and NAT mappings stay
// valid across restarts; an operator may pin it in the configuration instead.
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { writeFileAtomic } from '../common/atomic-file.ts';

/**
 * Below Linux's default ephemeral range (32768-60999), so the kernel never hands the port
 * to an outgoing connection, and above the well-known and most registered service ports.
 */
export const RANDOM_PORT_MIN = 20_000;
export const RANDOM_PORT_MAX = 32_767;

export class PunchPortError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PunchPortError';
  }
}

export interface PunchPortChoice {
  port: number;
  source: 'configured' | 'file' | 'random';
}

export interface PunchPortOptions {
  /** The operator's choice: used as is, nothing persisted. */
  configured?: number | undefined;
  /** Whether a freshly drawn port can be bound (TCP and UDP); injectable for tests. */
  isFree?: (port: number) => Promise<boolean>;
  random?: (min: number, maxInclusive: number) => number;
}

/** The configured port, else the one persisted at `path`, else a new random one (persisted). */
export async function loadOrCreatePunchPort(path: string, opts: PunchPortOptions = {}): Promise<PunchPortChoice> {
  if (opts.configured !== undefined)
    return { port: checkPort(opts.configured, 'configured punch port'), source: 'configured' };
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new PunchPortError(`cannot read punch port file ${path}: ${(err as Error).message}`);
    }
  }
  if (text !== undefined) {
    const trimmed = text.trim();
    if (!/^\d{1,5}$/.test(trimmed)) {
      throw new PunchPortError(`punch port file ${path} does not hold a port number; delete it to draw a new port`);
    }
    return { port: checkPort(Number(trimmed), `punch port file ${path}`), source: 'file' };
  }
  const isFree = opts.isFree ?? portIsFree;
  const draw = opts.random ?? ((min, max) => randomInt(min, max + 1));
  for (let attempt = 0; attempt < 32; attempt++) {
    const port = draw(RANDOM_PORT_MIN, RANDOM_PORT_MAX);
    if (!(await isFree(port))) continue;
    try {
      await writeFileAtomic(path, `${port}\n`, 0o600);
    } catch (err) {
      throw new PunchPortError(`cannot write punch port file ${path}: ${(err as Error).message}`);
    }
    return { port, source: 'random' };
  }
  throw new PunchPortError(
    `found no free port in ${RANDOM_PORT_MIN}-${RANDOM_PORT_MAX} after 32 draws; set overlay.punchPort`,
  );
}

function checkPort(port: number, what: string): number {
  if (!Number.isInteger(port) || port < 1 || port > 65_535) throw new PunchPortError(`${what}: ${port} is not a port`);
  return port;
}

/** True when both a TCP and a UDP socket can bind the port on every address right now. */
export async function portIsFree(port: number): Promise<boolean> {
  const tcp = await new Promise<boolean>((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
  if (!tcp) return false;
  return new Promise<boolean>((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => {
      socket.close();
      resolve(false);
    });
    socket.bind({ port, address: '0.0.0.0', exclusive: true }, () => socket.close(() => resolve(true)));
  });
}
