// iperf3 and ping between two namespaces, parsed from their machine-readable output.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { run } from '../../common/exec.ts';
import { percentile } from './stats.ts';

export interface IperfResult {
  gbps: number;
  retransmits?: number;
  lossPercent?: number;
}

/** Starts `iperf3 -s` inside `netns`; the caller stops it. */
export async function startIperfServer(netns: string, port = 5201): Promise<ChildProcess> {
  const server = spawn('ip', ['netns', 'exec', netns, 'iperf3', '-s', '--forceflush', '-p', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // iperf3 prints its banner once it listens.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      server.kill('SIGKILL');
      reject(new Error(`iperf3 server in ${netns} did not start`));
    }, 5000);
    server.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('Server listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    server.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`iperf3 server in ${netns} exited (${code})`));
    });
  });
  return server;
}

export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await once(child, 'exit');
  clearTimeout(timer);
}

export interface IperfClientOptions {
  netns: string;
  server: string;
  port?: number;
  seconds?: number;
  streams?: number;
  /** UDP at this offered rate (e.g. "500M"); TCP when absent. */
  udpRate?: string;
}

export async function iperfClient(opts: IperfClientOptions): Promise<IperfResult> {
  const args = ['netns', 'exec', opts.netns, 'iperf3', '-J', '-c', opts.server, '-p', String(opts.port ?? 5201)];
  args.push('-t', String(opts.seconds ?? 5), '-P', String(opts.streams ?? 1));
  if (opts.udpRate) args.push('-u', '-b', opts.udpRate, '-l', '1200');
  let out = JSON.parse(await run('ip', args, { timeoutMs: ((opts.seconds ?? 5) + 20) * 1000 }));
  // Back to back over a slow path, the server may not have finished the previous test when
  // the next client connects: it refuses at once ("busy", or a reset of the control
  // connection). One retry after a pause; any other error, or a second one, stands.
  if (typeof out.error === 'string' && /reset by peer|busy/i.test(out.error)) {
    await new Promise((r) => setTimeout(r, 1000));
    out = JSON.parse(await run('ip', args, { timeoutMs: ((opts.seconds ?? 5) + 20) * 1000 }));
  }
  if (out.error) throw new Error(`iperf3: ${out.error}`);
  if (opts.udpRate) {
    const sum = out.end.sum;
    // end.sum is the offered rate; what arrived is that minus the loss the server saw.
    return { gbps: (sum.bits_per_second * (1 - sum.lost_percent / 100)) / 1e9, lossPercent: sum.lost_percent };
  }
  return {
    gbps: out.end.sum_received.bits_per_second / 1e9,
    retransmits: out.end.sum_sent.retransmits,
  };
}

export interface RttResult {
  p50Ms: number;
  p99Ms: number;
  lossPercent: number;
}

/** `count` pings at 10 ms intervals; per-reply RTTs give p50/p99. */
export async function pingRtt(netns: string, target: string, count = 200): Promise<RttResult> {
  const out = await run(
    'ip',
    ['netns', 'exec', netns, 'ping', '-n', '-c', String(count), '-i', '0.01', '-W', '1', target],
    {
      timeoutMs: count * 50 + 10_000,
    },
  ).catch((err: Error) => err.message);
  const rtts = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  return {
    p50Ms: percentile(rtts, 50),
    p99Ms: percentile(rtts, 99),
    lossPercent: ((count - rtts.length) / count) * 100,
  };
}
