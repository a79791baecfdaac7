// Pod→pod network benchmark: every scenario measured in the same run, interleaved
// (round 1: A B C ..., round 2: A B C ...) so the machine's noise spreads over all of
// them, then medians and ratios.
import type { Scenario } from './baselines/pair.ts';
import { type Measurement, type MeasureOptions, measure } from './lib/measure.ts';
import { median } from './lib/stats.ts';

/** One figure a bed measured while coming up (e.g. the lab's hole-punch time). */
export interface BedFact {
  name: string;
  value: number;
  unit: string;
}

/** A bed brings scenarios up and tears them down (the comparison pair, the lab). */
export interface Bed {
  name: string;
  scenarios: Scenario[];
  facts?: BedFact[];
  /** Figures the bed derives from the run's medians (e.g. one path against another). */
  figures?(summary: readonly Summary[]): BedFact[];
  destroy(): Promise<void>;
}

export interface NetworkBenchOptions extends MeasureOptions {
  rounds: number;
  log?: (line: string) => void;
}

export type Summary = Omit<Measurement, 'scenario'> & { scenario: string; rounds: number };

export async function runNetworkBench(
  beds: readonly Bed[],
  opts: NetworkBenchOptions,
): Promise<{
  raw: Measurement[];
  summary: Summary[];
}> {
  const scenarios = beds.flatMap((b) => b.scenarios);
  const raw: Measurement[] = [];
  const total = opts.rounds * scenarios.length;
  const started = Date.now();
  let done = 0;
  for (let round = 1; round <= opts.rounds; round++) {
    for (const s of scenarios) {
      // Time left from the pace so far (the first measurement has no pace yet).
      const left =
        done === 0 ? '' : `, about ${Math.ceil((((Date.now() - started) / done) * (total - done)) / 1000)} s left`;
      opts.log?.(`round ${round}/${opts.rounds}, measurement ${done + 1}/${total}${left}: ${s.name}`);
      done++;
      try {
        raw.push(await measure(s, opts));
      } catch (err) {
        opts.log?.(`  ${s.name} failed: ${(err as Error).message}`);
      }
    }
  }
  const summary = scenarios.map((s) => {
    const runs = raw.filter((m) => m.scenario === s.name);
    const med = (k: keyof Omit<Measurement, 'scenario'>) => median(runs.map((m) => m[k]));
    return {
      scenario: s.name,
      rounds: runs.length,
      tcp1Gbps: med('tcp1Gbps'),
      tcp4Gbps: med('tcp4Gbps'),
      udpGbps: med('udpGbps'),
      udpLossPercent: med('udpLossPercent'),
      rttP50Ms: med('rttP50Ms'),
      rttP99Ms: med('rttP99Ms'),
      cpuSecondsPerGB: med('cpuSecondsPerGB'),
      relayCpuSecondsPerGB: med('relayCpuSecondsPerGB'),
      relayThreadCpuSecondsPerGB: med('relayThreadCpuSecondsPerGB'),
      relayNetCpuSecondsPerGB: med('relayNetCpuSecondsPerGB'),
      pathChanges: med('pathChanges'),
    };
  });
  return { raw, summary };
}
