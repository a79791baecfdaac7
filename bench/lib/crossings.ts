// Where a tunnel's round trip goes: tcpdump on each node's tunnel device and underlay
// interface while pings run, then, per ping, the time each node took to move the packet
// between the two (kernel capture timestamps, one clock for every namespace): A out (its TUN
// → its underlay), B in (underlay → TUN), B out, A in. What is left of the RTT is the
// kernel's part (the pod veths, routing, the underlay link). A diagnostic for the RTT row of
// the bench: the same split for any tunnel (edgemesh-cni's forwarders, nebula).
import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { median, percentile } from './stats.ts';

export interface CrossingEnd {
  netns: string;
  /** The tunnel device (where the node reads/writes inner packets). */
  tun: string;
  /** The underlay interface the datagrams leave and arrive on. */
  underlay: string;
}

interface Stamp {
  t: number;
  line: string;
}

/** One tcpdump, its lines stamped by the kernel (epoch seconds, µs). */
class Capture {
  readonly stamps: Stamp[] = [];
  readonly #child: ChildProcess;
  #buf = '';

  constructor(netns: string, dev: string, filter: string) {
    this.#child = spawn(
      'ip',
      [
        'netns',
        'exec',
        netns,
        'tcpdump',
        '-i',
        dev,
        '-n',
        '-l',
        '-tt',
        '--time-stamp-precision=micro',
        '-Q',
        'inout',
      ].concat(filter.split(' ')),
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    this.#child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.#buf += d;
      const lines = this.#buf.split('\n');
      this.#buf = lines.pop() ?? '';
      for (const line of lines) {
        const t = Number(line.slice(0, line.indexOf(' ')));
        if (Number.isFinite(t) && this.stamps.length < 100_000) this.stamps.push({ t: t * 1e6, line });
      }
    });
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise((r) => this.#child.once('exit', r));
    this.#child.kill('SIGINT');
    await Promise.race([exited, sleep(2000)]);
    if (this.#child.exitCode === null) this.#child.kill('SIGKILL');
  }
}

export interface CrossingTrace {
  stop(): Promise<CrossingReport>;
}

export interface CrossingReport {
  pings: number;
  /** Medians and p99s in µs of each node's crossing. */
  aOut: [number, number];
  bIn: [number, number];
  bOut: [number, number];
  aIn: [number, number];
}

/**
 * Starts the four captures; stop() after the pings pairs each echo request/reply on a TUN
 * with the next datagram (out) or the previous one (in) on that node's underlay within 5 ms.
 * `minDatagram`: underlay datagrams shorter than this (keepalives) are ignored.
 */
export async function traceCrossings(
  a: CrossingEnd,
  b: CrossingEnd,
  underlayFilter: string,
  minDatagram = 100,
): Promise<CrossingTrace> {
  const caps = {
    aTun: new Capture(a.netns, a.tun, 'icmp'),
    aUnder: new Capture(a.netns, a.underlay, `${underlayFilter} and greater ${minDatagram}`),
    bTun: new Capture(b.netns, b.tun, 'icmp'),
    bUnder: new Capture(b.netns, b.underlay, `${underlayFilter} and greater ${minDatagram}`),
  };
  await sleep(1000); // tcpdump attaches
  return {
    async stop() {
      await sleep(200);
      await Promise.all(Object.values(caps).map((c) => c.stop()));
      const out = (tun: Stamp[], under: Stamp[], kind: string): number[] => {
        const d: number[] = [];
        for (const s of tun) {
          if (!s.line.includes(kind)) continue;
          const next = under.find((u) => u.t >= s.t && u.t - s.t < 5000);
          if (next) d.push(next.t - s.t);
        }
        return d;
      };
      const inn = (tun: Stamp[], under: Stamp[], kind: string): number[] => {
        const d: number[] = [];
        for (const s of tun) {
          if (!s.line.includes(kind)) continue;
          let prev: Stamp | undefined;
          for (const u of under) {
            if (u.t > s.t) break;
            prev = u;
          }
          if (prev && s.t - prev.t < 5000) d.push(s.t - prev.t);
        }
        return d;
      };
      const stat = (d: number[]): [number, number] => [median(d), percentile(d, 99)];
      const aOut = out(caps.aTun.stamps, caps.aUnder.stamps, 'echo request');
      return {
        pings: aOut.length,
        aOut: stat(aOut),
        bIn: stat(inn(caps.bTun.stamps, caps.bUnder.stamps, 'echo request')),
        bOut: stat(out(caps.bTun.stamps, caps.bUnder.stamps, 'echo reply')),
        aIn: stat(inn(caps.aTun.stamps, caps.aUnder.stamps, 'echo reply')),
      };
    },
  };
}

export function formatCrossings(name: string, r: CrossingReport): string {
  const f = ([p50, p99]: [number, number]) => `${p50.toFixed(0)}/${p99.toFixed(0)}`;
  const sum = r.aOut[0] + r.bIn[0] + r.bOut[0] + r.aIn[0];
  return (
    `[bench] ${name}: per-node crossings over ${r.pings} pings, p50/p99 µs: A out ${f(r.aOut)}, B in ${f(r.bIn)}, ` +
    `B out ${f(r.bOut)}, A in ${f(r.aIn)}; the four p50s add to ${(sum / 1000).toFixed(3)} ms of the RTT`
  );
}
