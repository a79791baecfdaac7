import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type CaptureRequest,
  type ControlServer,
  fetchCapture,
  fetchStatus,
  parseCaptureQuery,
  startControlServer,
} from '../../../agent/control-api.ts';
import type { AgentStatus } from '../../../agent/status.ts';

const status: AgentStatus = {
  node: 'n1',
  site: 's1',
  peerId: 'p',
  podCidrs: ['10.244.1.0/24'],
  ready: true,
  peers: [],
};

let dir: string;
let server: ControlServer | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'em-agent-ctl-'));
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  rmSync(dir, { recursive: true, force: true });
});

async function collect(run: (out: PassThrough) => Promise<void>): Promise<Buffer> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  await run(out);
  return Buffer.concat(chunks);
}

describe('control API over the unix socket', () => {
  it('serves the status JSON on a root-only socket', async () => {
    const socket = join(dir, 'agent.sock');
    server = await startControlServer(socket, { status: () => status, capture: async (_r, out) => void out.end() });
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(await fetchStatus(socket)).toEqual(status);
  });

  it('passes the capture filter through and streams the pcap back', async () => {
    const socket = join(dir, 'agent.sock');
    let seen: CaptureRequest | undefined;
    server = await startControlServer(socket, {
      status: () => status,
      capture: async (req, out) => {
        seen = req;
        out.write(Buffer.from([0xd4, 0xc3, 0xb2, 0xa1]));
        out.end(Buffer.alloc(100_000, 7));
      },
    });
    const body = await collect((out) =>
      fetchCapture(socket, { seconds: 2, packets: 5, peer: 'edge-b-1', proto: 'tcp' }, out),
    );
    expect(seen).toEqual({ seconds: 2, packets: 5, peer: 'edge-b-1', proto: 'tcp' });
    expect(body.length).toBe(100_004);
    expect(body.readUInt32LE(0)).toBe(0xa1b2c3d4);
  });

  it('answers a bad capture request with 400 and the reason', async () => {
    const socket = join(dir, 'agent.sock');
    server = await startControlServer(socket, { status: () => status, capture: async (_r, out) => void out.end() });
    await expect(collect((out) => fetchCapture(socket, { seconds: -1 }, out))).rejects.toThrow(
      /agent answered 400: seconds: expected a number/,
    );
    await expect(collect((out) => fetchCapture(socket, { proto: 'smtp' }, out))).rejects.toThrow(/proto:/);
  });

  it('reports a capture that cannot start with 503 and the reason', async () => {
    const socket = join(dir, 'agent.sock');
    server = await startControlServer(socket, {
      status: () => status,
      capture: async () => {
        throw new Error('the dataplane is not up yet');
      },
    });
    await expect(collect((out) => fetchCapture(socket, {}, out))).rejects.toThrow(
      /agent answered 503: the dataplane is not up yet/,
    );
  });

  it('runs at most maxCaptures captures at once and refuses more with 429', async () => {
    const socket = join(dir, 'agent.sock');
    const release = Promise.withResolvers<void>();
    let started = 0;
    server = await startControlServer(
      socket,
      {
        status: () => status,
        capture: async (_r, out, signal) => {
          started++;
          out.write(Buffer.from([0xd4, 0xc3, 0xb2, 0xa1]));
          await Promise.race([release.promise, new Promise((r) => signal.addEventListener('abort', r))]);
          out.end();
        },
      },
      { maxCaptures: 2 },
    );
    const running = [0, 1].map(() => collect((out) => fetchCapture(socket, {}, out)));
    await expect.poll(() => started).toBe(2);
    await expect(collect((out) => fetchCapture(socket, {}, out))).rejects.toThrow(
      /agent answered 429: 2 captures are already running/,
    );
    expect(started).toBe(2);
    release.resolve();
    await Promise.all(running);
    // A slot is free again once a capture ends.
    expect((await collect((out) => fetchCapture(socket, {}, out))).length).toBe(4);
  });

  it('tells the operator when no agent listens', async () => {
    await expect(fetchStatus(join(dir, 'none.sock'))).rejects.toThrow(/cannot reach the agent .* is the agent running/);
  });

  it('replaces a socket file left behind by a killed agent', async () => {
    const socket = join(dir, 'agent.sock');
    const first = await startControlServer(socket, {
      status: () => status,
      capture: async (_r, out) => void out.end(),
    });
    // Simulates SIGKILL: the file stays, nobody listens (close() would remove it, so re-create it).
    await first.close();
    const { createServer } = await import('node:net');
    const stale = createServer().listen(socket);
    await new Promise((r) => stale.once('listening', r));
    stale.close();
    server = await startControlServer(socket, { status: () => status, capture: async (_r, out) => void out.end() });
    expect((await fetchStatus(socket)).node).toBe('n1');
  });
});

describe('parseCaptureQuery', () => {
  it('applies defaults and bounds', () => {
    expect(parseCaptureQuery(new URLSearchParams(''))).toEqual({ seconds: 10, packets: 1000 });
    expect(() => parseCaptureQuery(new URLSearchParams('packets=0'))).toThrow(/packets/);
    expect(() => parseCaptureQuery(new URLSearchParams('seconds=99999'))).toThrow(/seconds/);
    expect(parseCaptureQuery(new URLSearchParams('host=10.244.1.5&proto=17'))).toEqual({
      seconds: 10,
      packets: 1000,
      host: '10.244.1.5',
      proto: '17',
    });
  });
});
