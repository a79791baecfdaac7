// Measures one scenario once: TCP 1 and 4 streams, UDP at a fixed offered rate, ping RTT,
// and the CPU seconds the forwarding processes spent per GB moved.
import type { Scenario } from '../baselines/pair.ts';
import { totalCpuSeconds } from './cpu.ts';
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
}

export interface MeasureOptions {
  seconds: number;
  udpRate: string;
  pings: number;
}

export async function measure(s: Scenario, opts: MeasureOptions): Promise<Measurement> {
  const server = await startIperfServer(s.serverNetns);
  try {
    const pids = s.forwarderPids();
    const cpuBefore = totalCpuSeconds(pids);
    const tcp1 = await iperfClient({ netns: s.clientNetns, server: s.target, seconds: opts.seconds });
    const cpuAfter = totalCpuSeconds(pids);
    const gigabytes = (tcp1.gbps * opts.seconds) / 8;
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
    };
  } finally {
    await stopProcess(server);
  }
}
