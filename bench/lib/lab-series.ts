// A series of cold-started labs, one after another (bench/nat-matrix.ts, bench/nat-trials.ts):
// progress with the time left, the lab of each step taken down whatever happens in it, and
// Ctrl-C taking the current lab down before the process ends.
import type { Lab, LabUpOptions } from '../../lab/lab.ts';

export interface LabStep {
  /** 0-based position in the series. */
  index: number;
  /** "unknown" before the first step ends, else "~N s" from the steps so far. */
  timeLeft: string;
  /** Brings this step's lab up; the series takes it down after the step. */
  up(opts: LabUpOptions): Promise<Lab>;
}

export async function runLabSeries<T>(
  items: readonly T[],
  log: (line: string) => void,
  step: (item: T, ctx: LabStep) => Promise<void>,
): Promise<void> {
  const { labUp } = await import('../../lab/lab.ts');
  const started = Date.now();
  let current: Lab | undefined;
  const onInterrupt = () => {
    log('interrupted: taking the current lab down');
    void (current?.down() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onInterrupt);
  try {
    for (const [index, item] of items.entries()) {
      const elapsed = (Date.now() - started) / 1000;
      const timeLeft = index === 0 ? 'unknown' : `~${Math.round((elapsed / index) * (items.length - index))} s`;
      try {
        await step(item, {
          index,
          timeLeft,
          up: async (opts) => {
            current = await labUp(opts);
            return current;
          },
        });
      } finally {
        await current?.down().catch((err: Error) => log(`  lab down: ${err.message}`));
        current = undefined;
      }
    }
  } finally {
    process.removeListener('SIGINT', onInterrupt);
  }
}
