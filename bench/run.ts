// `npm run bench` / `edgemesh-cni bench`: the side-by-side benchmark. Builds the beds,
// measures every scenario interleaved over several rounds, runs the component benchmarks,
// and writes JSON + markdown + SVG under bench/results/<date>/.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runPrefix } from '../common/netns.ts';
import { comparisonBed } from './baselines/bed.ts';
import { labBed } from './lab-bed.ts';
import { toKnbJson } from './lib/knb.ts';
import { barChartSvg, type Table, writeResults } from './lib/report.ts';
import { ratio } from './lib/stats.ts';
import { type Bed, type BedFact, runNetworkBench, type Summary } from './network.ts';

const execFileAsync = promisify(execFile);
const root = join(import.meta.dirname, '..');

export interface BenchOptions {
  rounds: number;
  seconds: number;
  udpRate: string;
  pings: number;
  outDir?: string;
  /** Component benchmarks (scripts under bench/) to run and record. */
  components: boolean;
  /** The edgemesh-cni paths through the lab (off: only the comparison bed). */
  lab: boolean;
}

/** Benchmarks owned by each package, each a script printing its own figures. */
const componentScripts = [
  'lpm.ts',
  'dataplane-tun.ts',
  'udp-session.ts',
  'udp-relay.ts',
  'splice-relay.ts',
  'ipam.ts',
  'cni.ts',
  'control-plane.ts',
  'agent-memory.ts',
];

function networkTable(summary: readonly Summary[]): Table {
  const kernel = summary.find((s) => s.scenario.startsWith('kernel'));
  return {
    title: 'Pod → pod (iperf3, ping): medians of interleaved rounds',
    columns: [
      'scenario',
      'rounds',
      'TCP 1 stream Gbit/s',
      'TCP 4 streams Gbit/s',
      'UDP Gbit/s',
      'UDP loss %',
      'RTT p50 ms',
      'RTT p99 ms',
      'CPU s/GB',
      'TCP1 vs kernel',
    ],
    rows: summary.map((s) => [
      s.scenario,
      s.rounds,
      s.tcp1Gbps,
      s.tcp4Gbps,
      s.udpGbps,
      s.udpLossPercent,
      s.rttP50Ms,
      s.rttP99Ms,
      s.cpuSecondsPerGB,
      ratio(s.tcp1Gbps, kernel?.tcp1Gbps ?? Number.NaN),
    ]),
  };
}

function figuresTable(figures: readonly BedFact[]): Table {
  return {
    title: 'UDP relay: relayed against direct and the relay CPU, from the medians above (the agents as deployed)',
    columns: ['figure', 'value', 'unit'],
    rows: figures.map((f) => [f.name, f.value, f.unit]),
  };
}

function factsTable(facts: readonly BedFact[]): Table {
  return {
    title: 'Lab: time from the first packet to each tunnel path (hole-punch time)',
    columns: ['figure', 'value', 'unit'],
    rows: facts.map((f) => [f.name, f.value, f.unit]),
  };
}

export async function runBench(opts: BenchOptions, log: (line: string) => void = console.log): Promise<string> {
  const prefix = runPrefix('eb');
  const beds: Bed[] = [];
  let network: Awaited<ReturnType<typeof runNetworkBench>>;
  let facts: BedFact[] = [];
  try {
    log('setting up the comparison bed (kernel, wireguard-go, nebula)');
    beds.push(await comparisonBed(prefix));
    if (opts.lab) {
      log('bringing up the lab (edgemesh-cni paths)');
      beds.push(await labBed(log));
    }
    network = await runNetworkBench(beds, { ...opts, log });
  } finally {
    facts = beds.flatMap((b) => b.facts ?? []);
    for (const bed of beds) await bed.destroy();
  }
  const components: Record<string, string> = {};
  if (opts.components) {
    for (const script of componentScripts) {
      const file = join(root, 'bench', script);
      if (!existsSync(file)) continue;
      log(`component benchmark ${script}`);
      try {
        const { stdout } = await execFileAsync(process.execPath, [file], { cwd: root, timeout: 15 * 60_000 });
        components[script] = stdout;
      } catch (err) {
        components[script] = `failed: ${(err as Error).message}`;
      }
    }
  }
  const date = new Date().toISOString().slice(0, 10);
  const dir = opts.outDir ?? join(root, 'bench', 'results', date);
  const tables = [networkTable(network.summary)];
  const figures = beds.flatMap((b) => b.figures?.(network.summary) ?? []);
  if (figures.length > 0) tables.push(figuresTable(figures));
  if (facts.length > 0) tables.push(factsTable(facts));
  for (const [script, out] of Object.entries(components)) {
    tables.push({
      title: `bench/${script}`,
      columns: ['output'],
      rows: [[`<pre>${out.trim().replaceAll('\n', '<br>')}</pre>`]],
    });
  }
  const chart = barChartSvg(
    'TCP single stream, pod → pod (median)',
    'Gbit/s',
    network.summary.map((s) => ({ label: s.scenario, value: s.tcp1Gbps })),
  );
  await writeResults(
    dir,
    { date: new Date().toISOString(), options: opts, network, figures, facts, components },
    tables,
    [{ file: 'tcp-single-stream.svg', svg: chart }],
  );
  // The same figures in knb's JSON shape, to compare with knb runs on real clusters.
  await mkdir(join(dir, 'knb'), { recursive: true });
  for (const s of network.summary) {
    const knb = toKnbJson(s, { clientNode: 'lab-client', serverNode: 'lab-server', mtu: 1420 });
    await writeFile(join(dir, 'knb', `${knb.metadata.name}.json`), `${JSON.stringify(knb, null, 2)}\n`);
  }
  log(`results written to ${dir}`);
  return dir;
}
