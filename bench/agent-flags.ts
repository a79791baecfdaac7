// What a set of Node/V8 flags does to the agent as deployed, against the agent as it ships,
// in the default lab: rounds interleaved (shipped, compared, shipped, ...), each a lab of its
// own whose agents start with that set (lab/lab.ts agentNodeOptions; a flag named there wins
// over the agent's own, bin/agent-runtime.js). Per round: the agents' RSS 20 s after the
// reachability matrix (median of the six), then from edge-a-1-p1, to cloud-2-p1 (UDP direct)
// and to edge-b-1-p1 (UDP hole-punched): ping p50 (300 pings 10 ms apart), the two agents'
// CPU per ping per node during them (their threads' time on CPU from the scheduler, less
// what they used idle over as long just before: steadier than the RTT on a shared
// machine), and iperf3 TCP one stream. Prints every round, the medians and compared/shipped ratios. The default compares
// `--sparkplug`, what the agent gave up (bin/agent-runtime.js says why).
//   node bench/agent-flags.ts [--rounds 4] [--compare='--sparkplug'] [--seconds 5]    (root)
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { ensureAgentBundle } from '../lab/ensure-bundle.ts';
import { type Lab, labUp } from '../lab/lab.ts';
import { runMatrix } from '../lab/matrix.ts';
import { cpuNanoseconds } from './lib/cpu.ts';
import { iperfClient, pingRtt, startIperfServer, stopProcess } from './lib/iperf.ts';
import { rssKiB } from './lib/memory.ts';
import { median, ratio } from './lib/stats.ts';

const SOURCE = 'edge-a-1-p1';
const PAIRS = [
  { path: 'udp-direct', target: 'cloud-2-p1' },
  { path: 'udp-punched', target: 'edge-b-1-p1' },
] as const;
const SETTLE_SECONDS = 20;
const PINGS = 300;
/** pingRtt's interval. */
const PING_INTERVAL_MS = 10;
/** One round's lab up, matrix, settle and measurements, for the time-left estimate. */
const ROUND_SECONDS_ESTIMATE = 60;

interface RoundResult {
  rssMiB: number;
  pingP50Ms: Record<string, number>;
  /** The two agents' CPU per ping, per node (µs), their idle CPU taken out. */
  pingCpuUs: Record<string, number>;
  tcpGbps: Record<string, number>;
}

function agentPid(lab: Lab, node: string): number {
  const pid = lab.agentProcess(node)?.pid;
  if (pid === undefined) throw new Error(`no agent on ${node}`);
  return pid;
}

async function agentRssMiB(lab: Lab): Promise<number> {
  const rss: number[] = [];
  for (const node of lab.nodes) rss.push((await rssKiB(agentPid(lab, node.name))) / 1024);
  return median(rss);
}

async function round(options: string[], seconds: number): Promise<RoundResult> {
  const lab = await labUp({ agentNodeOptions: options });
  try {
    const matrix = await runMatrix(lab);
    const failed = matrix.entries.filter((e) => !e.ok).length;
    if (failed > 0) throw new Error(`${failed} pod pairs unreachable`);
    await sleep(SETTLE_SECONDS * 1000);
    const result: RoundResult = { rssMiB: await agentRssMiB(lab), pingP50Ms: {}, pingCpuUs: {}, tcpGbps: {} };
    const from = lab.netnsOf(SOURCE);
    for (const { path, target } of PAIRS) {
      const ip = lab.pod(target).ips[0]!;
      await pingRtt(from, ip, 20); // the pair's path up and warm
      const agents = [SOURCE, target].map((pod) => agentPid(lab, lab.pod(pod).node));
      const cpu = () => agents.reduce((sum, pid) => sum + cpuNanoseconds(pid), 0);
      const idleFrom = cpu();
      const idleStarted = performance.now();
      await sleep(PINGS * PING_INTERVAL_MS);
      const idlePerMs = (cpu() - idleFrom) / (performance.now() - idleStarted);
      const pingFrom = cpu();
      const pingStarted = performance.now();
      result.pingP50Ms[path] = (await pingRtt(from, ip, PINGS)).p50Ms;
      const busy = cpu() - pingFrom - idlePerMs * (performance.now() - pingStarted);
      result.pingCpuUs[path] = busy / agents.length / PINGS / 1000;
      const server = await startIperfServer(lab.netnsOf(target));
      try {
        result.tcpGbps[path] = (await iperfClient({ netns: from, server: ip, seconds })).gbps;
      } finally {
        await stopProcess(server);
      }
    }
    return result;
  } finally {
    await lab.down();
  }
}

function summary(label: string, results: RoundResult[]): RoundResult {
  const of = (pick: (r: RoundResult) => number) => median(results.map(pick));
  const s: RoundResult = { rssMiB: of((r) => r.rssMiB), pingP50Ms: {}, pingCpuUs: {}, tcpGbps: {} };
  for (const { path } of PAIRS) {
    s.pingP50Ms[path] = of((r) => r.pingP50Ms[path]!);
    s.pingCpuUs[path] = of((r) => r.pingCpuUs[path]!);
    s.tcpGbps[path] = of((r) => r.tcpGbps[path]!);
  }
  console.log(`  ${label.padEnd(28)} ${line(s)}`);
  return s;
}

function line(r: RoundResult): string {
  const paths = PAIRS.map(
    ({ path }) =>
      `${path} ping p50 ${r.pingP50Ms[path]!.toFixed(3)} ms, ${r.pingCpuUs[path]!.toFixed(0)} µs CPU per ping per node, ` +
      `TCP ${r.tcpGbps[path]!.toFixed(2)} Gbit/s`,
  );
  return `agents' RSS median ${r.rssMiB.toFixed(1)} MiB; ${paths.join('; ')}`;
}

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    compare: { type: 'string', default: '--sparkplug' },
    seconds: { type: 'string', default: '5' },
  },
});
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const compared = values.compare.split(/\s+/).filter(Boolean);
const sets = [
  { label: 'as shipped', options: [] as string[] },
  { label: compared.join(' '), options: compared },
];
console.log(
  `the agent as shipped against it with ${compared.join(' ')}, default lab, ${rounds} rounds each, interleaved: ` +
    `agents' RSS ${SETTLE_SECONDS} s after the matrix, then from ${SOURCE}: ping p50 and iperf3 TCP (${seconds} s)`,
);
console.log((await ensureAgentBundle()) || "the agent's bundle (build/agent.js) is current");
const results = sets.map(() => [] as RoundResult[]);
const started = Date.now();
for (let i = 0; i < rounds; i++) {
  for (const [k, set] of sets.entries()) {
    const done = i * sets.length + k;
    const left = (rounds * sets.length - done) * ROUND_SECONDS_ESTIMATE;
    console.log(
      `[round ${i + 1}/${rounds}, ${set.label}] lab up … (${((Date.now() - started) / 1000).toFixed(0)} s in, about ${Math.ceil(left / 60)} min left)`,
    );
    const r = await round(set.options, seconds);
    results[k]!.push(r);
    console.log(`  ${line(r)}`);
  }
}
console.log(`medians over ${rounds} rounds:`);
const [shipped, other] = sets.map((set, k) => summary(set.label, results[k]!));
console.log(
  `  ${compared.join(' ')} / as shipped: RSS ${ratio(other!.rssMiB, shipped!.rssMiB).toFixed(2)}; ` +
    PAIRS.map(
      ({ path }) =>
        `${path} ping p50 ${ratio(other!.pingP50Ms[path]!, shipped!.pingP50Ms[path]!).toFixed(2)}, ` +
        `CPU per ping ${ratio(other!.pingCpuUs[path]!, shipped!.pingCpuUs[path]!).toFixed(2)}, ` +
        `TCP ${ratio(other!.tcpGbps[path]!, shipped!.tcpGbps[path]!).toFixed(2)}`,
    ).join('; '),
);
