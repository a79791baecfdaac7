// Measures one scenario once: TCP 1 and 4 streams, UDP at a fixed offered rate, ping RTT,
// and the CPU seconds the forwarding processes spent per GB moved.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Scenario } from '../baselines/pair.ts';
import { cpuSeconds, threadCpuSeconds, totalCpuSeconds } from './cpu.ts';
import { iperfClient, pingRtt, startIperfServer, stopProcess } from './iperf.ts';

export interface Measurement {
  scenario: string;
  tcp1Gbps: number;
  tcp4Gbps: number;
  udpGbps: number;
  udpLossPercent: number;
  rttP50Ms: number;
  rttP99Ms: number;
  cpuSecondsPerGB: number;
  /** The relay node's whole process (its agent), CPU s per GB of the TCP 1-stream run; NaN without a relay. */
  relayCpuSecondsPerGB: number;
  /** The relay's forwarding thread alone. */
  relayThreadCpuSecondsPerGB: number;
  /** The whole process less what it spends idle (measured for as long just before the run). */
  relayNetCpuSecondsPerGB: number;
  /** Changes of the pair's path seen during the TCP 1-stream run (NaN: not watched). */
  pathChanges: number;
}

export interface MeasureOptions {
  seconds: number;
  udpRate: string;
  pings: number;
}

export async function measure(s: Scenario, opts: MeasureOptions): Promise<Measurement> {
  const server = await startIperfServer(s.serverNetns);
  try {
    await s.prepare?.();
    const pids = s.forwarderPids();
    const relayPid = s.relay?.pid() ?? 0;
    const relayCpu = () =>
      s.relay === undefined ? [0, 0] : [cpuSeconds(relayPid), threadCpuSeconds(relayPid, s.relay.thread)];
    // The relay node's agent does other work too (reflection, the libp2p relay, timers): its
    // CPU while the pair is idle, as long as the run, is subtracted for the net figure.
    let relayIdlePerSecond = Number.NaN;
    if (s.relay !== undefined && relayPid > 0) {
      const [idleFrom, startedAt] = [cpuSeconds(relayPid), performance.now()];
      await sleep(opts.seconds * 1000);
      relayIdlePerSecond = (cpuSeconds(relayPid) - idleFrom) / ((performance.now() - startedAt) / 1000);
    }
    const watch = s.watchPath?.();
    const cpuBefore = totalCpuSeconds(pids);
    const [relayBefore, threadBefore] = relayCpu();
    const runFrom = performance.now();
    const tcp1 = await iperfClient({ netns: s.clientNetns, server: s.target, seconds: opts.seconds });
    const runSeconds = (performance.now() - runFrom) / 1000;
    const cpuAfter = totalCpuSeconds(pids);
    const [relayAfter, threadAfter] = relayCpu();
    const changes = (await watch?.stop()) ?? Number.NaN;
    const gigabytes = (tcp1.gbps * opts.seconds) / 8;
    const perGB = (cpu: number) =>
      s.relay !== undefined && relayPid > 0 && gigabytes > 0 ? cpu / gigabytes : Number.NaN;
    const tcp4 = await iperfClient({ netns: s.clientNetns, server: s.target, seconds: opts.seconds, streams: 4 });
    const udp = await iperfClient({
      netns: s.clientNetns,
      server: s.target,
      seconds: Math.max(2, Math.round(opts.seconds / 2)),
      udpRate: opts.udpRate,
    });
    const rtt = await pingRtt(s.clientNetns, s.target, opts.pings);
    return {
      scenario: s.name,
      tcp1Gbps: tcp1.gbps,
      tcp4Gbps: tcp4.gbps,
      udpGbps: udp.gbps,
      udpLossPercent: udp.lossPercent ?? Number.NaN,
      rttP50Ms: rtt.p50Ms,
      rttP99Ms: rtt.p99Ms,
      cpuSecondsPerGB: pids.length > 0 && gigabytes > 0 ? (cpuAfter - cpuBefore) / gigabytes : Number.NaN,
      relayCpuSecondsPerGB: perGB(relayAfter! - relayBefore!),
      relayThreadCpuSecondsPerGB: perGB(threadAfter! - threadBefore!),
      relayNetCpuSecondsPerGB: perGB(relayAfter! - relayBefore! - relayIdlePerSecond * runSeconds),
      pathChanges: changes,
    };
  } finally {
    await stopProcess(server);
  }
}
