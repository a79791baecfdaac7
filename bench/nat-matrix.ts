// The NAT matrix: for each pair of NAT kinds (edge-a's, edge-b's) a lab comes up with N
// nodes per edge site and every edge-a/edge-b node pair gets its first packet, pod to pod,
// all pairs at once as in a busy cluster (half of the pairs start on edge-a, half on edge-b).
// The source agent's path to the peer is polled until it is direct (neither relayed nor
// none) or the timeout passes. Reported per NAT pair: the share of node pairs that went
// direct, p50/p99 of first packet → direct, the paths the pairs ended on. It reports what
// the agents do, whatever that is; it is slow (one lab per pair of kinds).
//
// Run (root): node bench/nat-matrix.ts [--nodes-per-site 2] [--timeout 20] [--trials 1]
//             [--kinds masquerade,remap,symmetric,udp-blocked] [--out bench/results/<date>]
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { describeQuiet } from '../lab/quiet-cpu.ts';
import { crossSitePairs, measureTimeToDirect, type PairResult } from '../lab/time-to-direct.ts';
import { NAT_KINDS, type NatKind, NatKindSchema } from '../lab/topology.ts';
import { runLabSeries } from './lib/lab-series.ts';
import { machineDescription, markdownTable, type Table } from './lib/report.ts';
import { percentile } from './lib/stats.ts';

export type { PairResult };

export interface ComboResult {
  natA: NatKind;
  natB: NatKind;
  trial: number;
  /** Set when the lab did not come up: no pairs then. */
  error?: string;
  labUpSeconds: number;
  pairs: PairResult[];
}

export interface ComboSummary {
  natA: NatKind;
  natB: NatKind;
  pairs: number;
  direct: number;
  successRate: number;
  p50MsToDirect: number;
  p99MsToDirect: number;
  finalPaths: Record<string, number>;
  errors: number;
}

/** Per pair of NAT kinds: success rate, p50/p99 time to direct, paths at the end. */
export function summarise(results: readonly ComboResult[]): ComboSummary[] {
  const byKey = new Map<string, ComboResult[]>();
  for (const r of results) byKey.set(`${r.natA}|${r.natB}`, [...(byKey.get(`${r.natA}|${r.natB}`) ?? []), r]);
  return [...byKey.values()].map((list) => {
    const pairs = list.flatMap((r) => r.pairs);
    const times = pairs.flatMap((p) => (p.msToDirect === null ? [] : [p.msToDirect]));
    const finalPaths: Record<string, number> = {};
    for (const p of pairs) finalPaths[p.finalPath] = (finalPaths[p.finalPath] ?? 0) + 1;
    return {
      natA: list[0]!.natA,
      natB: list[0]!.natB,
      pairs: pairs.length,
      direct: times.length,
      successRate: pairs.length === 0 ? Number.NaN : times.length / pairs.length,
      p50MsToDirect: percentile(times, 50),
      p99MsToDirect: percentile(times, 99),
      finalPaths,
      errors: list.filter((r) => r.error).length,
    };
  });
}

/** Every unordered pair of the given kinds, each kind with itself included. */
export function kindPairs(kinds: readonly NatKind[]): Array<[NatKind, NatKind]> {
  const pairs: Array<[NatKind, NatKind]> = [];
  for (let i = 0; i < kinds.length; i++) for (let j = i; j < kinds.length; j++) pairs.push([kinds[i]!, kinds[j]!]);
  return pairs;
}

export interface NatMatrixOptions {
  kinds: NatKind[];
  nodesPerSite: number;
  timeoutMs: number;
  trials: number;
  outDir: string;
}

export async function runNatMatrix(opts: NatMatrixOptions, log: (line: string) => void = console.log) {
  const { defaultTopology } = await import('../lab/topology.ts');
  const combos = kindPairs(opts.kinds).flatMap(([a, b]) =>
    Array.from({ length: opts.trials }, (_, t) => ({ a, b, trial: t + 1 })),
  );
  const results: ComboResult[] = [];
  const started = Date.now();
  await runLabSeries(combos, log, async ({ a, b, trial }, { index: i, timeLeft: eta, up }) => {
    const label = `${a} ↔ ${b}${opts.trials > 1 ? ` (trial ${trial})` : ''}`;
    log(`[${i + 1}/${combos.length}] ${label}: lab up with ${opts.nodesPerSite} nodes per site (time left ${eta})`);
    const t0 = Date.now();
    const result: ComboResult = { natA: a, natB: b, trial, labUpSeconds: 0, pairs: [] };
    results.push(result);
    try {
      const lab = await up({
        topology: defaultTopology({
          nodesPerSite: opts.nodesPerSite,
          podsPerNode: 1,
          nat: { 'edge-a': a, 'edge-b': b },
        }),
        readyTimeoutMs: 120_000,
      });
      result.labUpSeconds = (Date.now() - t0) / 1000;
      log(
        `  ${label}: lab ${lab.id} up in ${result.labUpSeconds.toFixed(1)} s; first packets for every edge-a/edge-b node pair`,
      );
      result.pairs = await measureTimeToDirect(lab, crossSitePairs(lab, 'edge-a', 'edge-b'), {
        timeoutMs: opts.timeoutMs,
        onSettled: (s) => log(`  ${label}: ${describeQuiet(s)}, first packets now`),
        progress: (direct, total, ms, leftMs) =>
          log(
            `  ${label}: ${direct}/${total} pairs direct after ${(ms / 1000).toFixed(0)} s (${(leftMs / 1000).toFixed(0)} s left for this lab)`,
          ),
      });
    } catch (err) {
      result.error = (err as Error).message;
      log(`  ${label}: FAILED: ${result.error.replaceAll('\n', '\n    ')}`);
    }
    const [s] = summarise([result]);
    if (s && !result.error)
      log(
        `  ${label}: ${s.direct}/${s.pairs} direct, p50 ${fmtMs(s.p50MsToDirect)}, p99 ${fmtMs(s.p99MsToDirect)}; ended on ${fmtPaths(s.finalPaths)}`,
      );
  });
  const summary = summarise(results);
  const table: Table = {
    title: `NAT matrix: first packet → direct path, ${opts.nodesPerSite} nodes per edge site, ${opts.timeoutMs / 1000} s timeout`,
    columns: [
      'edge-a NAT',
      'edge-b NAT',
      'node pairs',
      'direct',
      'success %',
      'p50 to direct',
      'p99 to direct',
      'paths at the end',
    ],
    rows: summary.map((s) => [
      s.natA,
      s.natB,
      s.pairs,
      s.direct,
      Number.isFinite(s.successRate) ? Math.round(s.successRate * 100) : Number.NaN,
      fmtMs(s.p50MsToDirect),
      fmtMs(s.p99MsToDirect),
      `${fmtPaths(s.finalPaths)}${s.errors ? ` (${s.errors} lab failures)` : ''}`,
    ]),
    notes: [
      'Direct = the source agent reports a path no relay carries (direct, hole-punched, udp-punched), timed at the ' +
        "agent's own switch (pathSince; polled every 200 ms) on a shared 2-core machine. Every node pair sends its " +
        'first packet at the same moment, once the agents are past their start-up memory release and the CPUs are quiet.',
    ],
  };
  await mkdir(opts.outDir, { recursive: true });
  const data = {
    date: new Date().toISOString(),
    machine: machineDescription(),
    options: opts,
    // Which side sends a pair's first packet (before this field existed: always edge-a).
    initiators: 'alternating: edge-a-i → edge-b-j when i + j is even, else edge-b-j → edge-a-i',
    summary,
    results,
  };
  await writeFile(join(opts.outDir, 'nat-matrix.json'), `${JSON.stringify(data, null, 2)}\n`);
  await writeFile(
    join(opts.outDir, 'nat-matrix.md'),
    `# edgemesh-cni NAT matrix, ${data.date}\n\nMachine: ${data.machine}\n\n${markdownTable(table)}`,
  );
  log('');
  log(markdownTable(table));
  log(
    `written: ${join(opts.outDir, 'nat-matrix.json')}, nat-matrix.md (${((Date.now() - started) / 1000).toFixed(0)} s in all)`,
  );
  return { summary, results };
}

function fmtMs(ms: number): string {
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : '–';
}

function fmtPaths(paths: Record<string, number>): string {
  return (
    Object.entries(paths)
      .map(([p, n]) => `${p} ×${n}`)
      .join(', ') || '–'
  );
}

function positiveInt(name: string, text: string, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new Error(`${name}: expected a whole number 1–${max}, got "${text}"`);
  return n;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      'nodes-per-site': { type: 'string', default: '2' },
      timeout: { type: 'string', default: '20' },
      trials: { type: 'string', default: '1' },
      kinds: { type: 'string', default: NAT_KINDS.join(',') },
      out: { type: 'string' },
    },
  });
  try {
    const kinds = values.kinds.split(',').map((k) => {
      const parsed = NatKindSchema.safeParse(k.trim());
      if (!parsed.success) throw new Error(`--kinds: "${k}" is not a NAT kind (${NAT_KINDS.join(', ')})`);
      return parsed.data;
    });
    await runNatMatrix({
      kinds: [...new Set(kinds)],
      nodesPerSite: positiveInt('--nodes-per-site', values['nodes-per-site'], 20),
      timeoutMs: positiveInt('--timeout', values.timeout, 3600) * 1000,
      trials: positiveInt('--trials', values.trials, 100),
      outDir: values.out ?? join(import.meta.dirname, 'results', new Date().toISOString().slice(0, 10)),
    });
  } catch (err) {
    process.stderr.write(`nat-matrix: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
