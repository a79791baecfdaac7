// Waits for this machine's CPUs to go quiet. The lab runs every node's agent on the same
// few cores, so right after `lab up` their start-up chores (reservations, reflection, the
// kube watch) compete with whatever is timed next; on a real cluster each node has its own
// CPU. Timings that stand for one node's behaviour start once the machine is quiet.
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

export interface QuietCpuOptions {
  /** Share of CPU time idle over one window that counts as quiet (default 0.75). */
  idleShare?: number;
  /** Length of one sampling window (default 500 ms). */
  windowMs?: number;
  /** Give up after this long and go on anyway (default 20 s). */
  timeoutMs?: number;
}

export interface QuietCpu {
  /** Whether a quiet window came before the timeout. */
  quiet: boolean;
  waitedMs: number;
  /** Idle share of the last window. */
  idleShare: number;
}

function totals(): { idle: number; all: number } {
  let idle = 0;
  let all = 0;
  for (const c of cpus()) {
    idle += c.times.idle;
    all += c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq;
  }
  return { idle, all };
}

/** Resolves at the end of the first window whose idle share reaches `idleShare`, or at the timeout. */
export async function waitForQuietCpu(opts: QuietCpuOptions = {}): Promise<QuietCpu> {
  const want = opts.idleShare ?? 0.75;
  const windowMs = opts.windowMs ?? 500;
  const start = Date.now();
  const deadline = start + (opts.timeoutMs ?? 20_000);
  let share = 0;
  do {
    const a = totals();
    await sleep(windowMs);
    const b = totals();
    share = b.all > a.all ? (b.idle - a.idle) / (b.all - a.all) : 1;
    if (share >= want) return { quiet: true, waitedMs: Date.now() - start, idleShare: share };
  } while (Date.now() < deadline);
  return { quiet: false, waitedMs: Date.now() - start, idleShare: share };
}

/** One line for progress output: "CPUs quiet after 1512 ms (96 % idle)". */
export function describeQuiet(s: QuietCpu): string {
  return `CPUs ${s.quiet ? 'quiet' : 'still busy'} after ${s.waitedMs} ms (${(s.idleShare * 100).toFixed(0)} % idle)`;
}
