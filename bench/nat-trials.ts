// The hole-punching trial series the e2e tests run a small sample of:
//   birthday  edge-a behind an endpoint-dependent NAT (symmetric), edge-b port-preserving
//             (masquerade): every cross-site pair must be direct within 10 s, in at least
//             95 % of the trials (a trial = one node pair's first packet after a cold start;
//             --nodes-per-site 2 gives 4 pairs per lab).
//   punch     3 nodes per edge site, both NATs port-preserving: every cross-site pair direct
//             within 3 s of its first packet, over --trials cold starts with no miss.
//   both-hard both edges endpoint-dependent: the pairs end relayed, no birthday probe at all.
// Each lab waits for its nodes' NAT kinds (the punching roles come from them) before the
// first packets. Prints progress with the time left, then the rate and first packet → direct
// times per check, and writes JSON + Markdown. The machine is shared: times are noisy.
//
// Run (root): node bench/nat-trials.ts [--checks birthday,punch,both-hard] [--trials 20]
//             [--nodes-per-site 2] [--out bench/results/<date>]
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { describeQuiet } from '../lab/quiet-cpu.ts';
import { crossSitePairs, measureTimeToDirect, type PairResult } from '../lab/time-to-direct.ts';
import type { NatKind } from '../lab/topology.ts';
import { runLabSeries } from './lib/lab-series.ts';
import { machineDescription, markdownTable, type Table } from './lib/report.ts';
import { percentile } from './lib/stats.ts';

const CHECKS = ['birthday', 'punch', 'both-hard'] as const;
type Check = (typeof CHECKS)[number];

interface CheckPlan {
  check: Check;
  nat: { 'edge-a': NatKind; 'edge-b': NatKind };
  nodesPerSite: number;
  /** A pair counts when direct within this long of its first packet. */
  withinMs: number;
  /** Measured this long (a miss shows how late it went direct, if at all). */
  timeoutMs: number;
  kinds: Record<string, string>;
  /** The bar: share of pairs in time. */
  requiredRate: number;
}

export interface LabTrial {
  check: Check;
  lab: number;
  error?: string;
  pairs: PairResult[];
  /** edgemesh_udp_birthday_total per edge node. */
  birthday: Record<string, Record<string, number>>;
}

function plans(nodesPerSite: number): Record<Check, CheckPlan> {
  return {
    birthday: {
      check: 'birthday',
      nat: { 'edge-a': 'symmetric', 'edge-b': 'masquerade' },
      nodesPerSite,
      withinMs: 10_000,
      timeoutMs: 20_000,
      kinds: { cloud: 'none', 'edge-a': 'endpoint-dependent', 'edge-b': 'endpoint-independent' },
      requiredRate: 0.95,
    },
    punch: {
      check: 'punch',
      nat: { 'edge-a': 'masquerade', 'edge-b': 'masquerade' },
      nodesPerSite: 3,
      withinMs: 3000,
      timeoutMs: 12_000,
      kinds: { cloud: 'none', 'edge-a': 'endpoint-independent', 'edge-b': 'endpoint-independent' },
      requiredRate: 1,
    },
    'both-hard': {
      check: 'both-hard',
      nat: { 'edge-a': 'symmetric', 'edge-b': 'symmetric' },
      nodesPerSite,
      // Never direct: measured for a while to see them stay relayed.
      withinMs: 0,
      timeoutMs: 15_000,
      kinds: { cloud: 'none', 'edge-a': 'endpoint-dependent', 'edge-b': 'endpoint-dependent' },
      requiredRate: 0,
    },
  };
}

/** How many labs a check needs for `trials` (birthday, both-hard: pair trials; punch: cold starts). */
export function labsFor(check: Check, trials: number, nodesPerSite: number): number {
  if (check === 'punch') return trials;
  if (check === 'both-hard') return Math.max(1, Math.ceil(trials / 20));
  return Math.ceil(trials / (nodesPerSite * nodesPerSite));
}

export interface CheckSummary {
  check: Check;
  labs: number;
  pairs: number;
  inTime: number;
  rate: number;
  required: string;
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
  never: number;
  finalPaths: Record<string, number>;
  birthday: Record<string, number>;
  pass: boolean;
}

export function summariseCheck(plan: CheckPlan, trials: readonly LabTrial[]): CheckSummary {
  const pairs = trials.flatMap((t) => t.pairs);
  const times = pairs.flatMap((p) => (p.msToDirect === null ? [] : [p.msToDirect]));
  const inTime = times.filter((ms) => ms <= plan.withinMs).length;
  const finalPaths: Record<string, number> = {};
  for (const p of pairs) finalPaths[p.finalPath] = (finalPaths[p.finalPath] ?? 0) + 1;
  const birthday: Record<string, number> = {};
  for (const t of trials)
    for (const m of Object.values(t.birthday))
      for (const [k, v] of Object.entries(m)) birthday[k] = (birthday[k] ?? 0) + v;
  const rate = pairs.length === 0 ? Number.NaN : inTime / pairs.length;
  const errors = trials.filter((t) => t.error).length;
  const pass =
    errors === 0 &&
    pairs.length > 0 &&
    (plan.check === 'both-hard'
      ? times.length === 0 && (birthday['probes-sent'] ?? 0) === 0
      : rate >= plan.requiredRate);
  return {
    check: plan.check,
    labs: trials.length,
    pairs: pairs.length,
    inTime,
    rate,
    required:
      plan.check === 'both-hard'
        ? 'all relayed, 0 birthday probes'
        : `${Math.round(plan.requiredRate * 100)} % within ${plan.withinMs / 1000} s`,
    p50Ms: percentile(times, 50),
    p95Ms: percentile(times, 95),
    maxMs: times.length === 0 ? Number.NaN : Math.max(...times),
    never: pairs.length - times.length,
    finalPaths,
    birthday,
    pass,
  };
}

export async function runNatTrials(
  opts: { checks: Check[]; trials: number; nodesPerSite: number; outDir: string },
  log: (line: string) => void = console.log,
) {
  const { defaultTopology } = await import('../lab/topology.ts');
  const { birthdayMetrics, waitForNatKinds } = await import('../lab/nat-kinds.ts');
  const all = plans(opts.nodesPerSite);
  const runs = opts.checks.flatMap((check) =>
    Array.from({ length: labsFor(check, opts.trials, opts.nodesPerSite) }, (_, i) => ({
      plan: all[check],
      lab: i + 1,
    })),
  );
  const trials: LabTrial[] = [];
  const started = Date.now();
  await runLabSeries(runs, log, async ({ plan, lab: n }, { index: i, timeLeft: left, up }) => {
    const label = `${plan.check} lab ${n}/${runs.filter((r) => r.plan === plan).length}`;
    log(
      `[${i + 1}/${runs.length}] ${label}: lab up (${plan.nat['edge-a']} ↔ ${plan.nat['edge-b']}), time left ${left}`,
    );
    const trial: LabTrial = { check: plan.check, lab: n, pairs: [], birthday: {} };
    trials.push(trial);
    try {
      const lab = await up({
        topology: defaultTopology({ nodesPerSite: plan.nodesPerSite, podsPerNode: 1, nat: plan.nat }),
        readyTimeoutMs: 120_000,
      });
      await waitForNatKinds(lab, plan.kinds);
      trial.pairs = await measureTimeToDirect(lab, crossSitePairs(lab, 'edge-a', 'edge-b'), {
        timeoutMs: plan.timeoutMs,
        onSettled: (s) => log(`  ${label}: ${describeQuiet(s)}, first packets now`),
      });
      for (const node of lab.nodes.filter((x) => x.site !== 'cloud'))
        trial.birthday[node.name] = await birthdayMetrics(lab, node.name);
    } catch (err) {
      trial.error = (err as Error).message;
      log(`  ${label}: FAILED: ${trial.error.replaceAll('\n', '\n    ')}`);
    }
    const times = trial.pairs.map((p) => (p.msToDirect === null ? 'never' : `${p.msToDirect}`));
    log(
      `  ${label}: first packet → direct (ms): ${times.join(' ')}; ended ${trial.pairs.map((p) => p.finalPath).join(' ')}`,
    );
    const sofar = summariseCheck(
      plan,
      trials.filter((t) => t.check === plan.check),
    );
    if (plan.check !== 'both-hard')
      log(
        `  ${plan.check} so far: ${sofar.inTime}/${sofar.pairs} within ${plan.withinMs / 1000} s (${(sofar.rate * 100).toFixed(0)} %)`,
      );
  });
  const summary = opts.checks.map((c) =>
    summariseCheck(
      all[c],
      trials.filter((t) => t.check === c),
    ),
  );
  const fmt = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : '–');
  const table: Table = {
    title: 'Hole punching trials: first packet → direct, per node pair after a cold start',
    columns: [
      'check',
      'labs',
      'pairs',
      'in time',
      'rate',
      'bar',
      'p50',
      'p95',
      'max',
      'never',
      'birthday probes',
      'pass',
    ],
    rows: summary.map((s) => [
      s.check,
      s.labs,
      s.pairs,
      s.inTime,
      Number.isFinite(s.rate) ? `${(s.rate * 100).toFixed(0)} %` : '–',
      s.required,
      fmt(s.p50Ms),
      fmt(s.p95Ms),
      fmt(s.maxMs),
      s.never,
      s.birthday['probes-sent'] ?? 0,
      s.pass ? 'yes' : 'NO',
    ]),
    notes: [
      "A pair's time runs from its first packet to the agent's switch to a direct path (its status's pathSince; " +
        'polled every 200 ms). Each lab waits for its NAT kinds to be known, for its agents to be past their ' +
        "start-up memory release and for the CPUs to be quiet; then every pair's ping, spawned beforehand, " +
        'fires at once. Every node of a lab shares the same 2 cores: first contact is CPU-bound there.',
    ],
  };
  await mkdir(opts.outDir, { recursive: true });
  const data = { date: new Date().toISOString(), machine: machineDescription(), options: opts, summary, trials };
  await writeFile(join(opts.outDir, 'nat-trials.json'), `${JSON.stringify(data, null, 2)}\n`);
  await writeFile(
    join(opts.outDir, 'nat-trials.md'),
    `# edgemesh-cni hole punching trials, ${data.date}\n\nMachine: ${data.machine}\n\n${markdownTable(table)}`,
  );
  log('');
  log(markdownTable(table));
  log(
    `written: ${join(opts.outDir, 'nat-trials.json')}, nat-trials.md (${((Date.now() - started) / 1000).toFixed(0)} s in all)`,
  );
  return summary;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      checks: { type: 'string', default: CHECKS.join(',') },
      trials: { type: 'string', default: '20' },
      'nodes-per-site': { type: 'string', default: '2' },
      out: { type: 'string' },
    },
  });
  try {
    const checks = values.checks.split(',').map((c) => {
      if (!(CHECKS as readonly string[]).includes(c.trim()))
        throw new Error(`--checks: "${c}" is not one of ${CHECKS.join(', ')}`);
      return c.trim() as Check;
    });
    const trials = Number(values.trials);
    const nodesPerSite = Number(values['nodes-per-site']);
    if (!Number.isInteger(trials) || trials < 1 || trials > 200) throw new Error('--trials: a whole number 1–200');
    if (!Number.isInteger(nodesPerSite) || nodesPerSite < 1 || nodesPerSite > 6)
      throw new Error('--nodes-per-site: a whole number 1–6');
    const summary = await runNatTrials({
      checks: [...new Set(checks)],
      trials,
      nodesPerSite,
      outDir: values.out ?? join(import.meta.dirname, 'results', new Date().toISOString().slice(0, 10)),
    });
    process.exit(summary.every((s) => s.pass) ? 0 : 2);
  } catch (err) {
    process.stderr.write(`nat-trials: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
