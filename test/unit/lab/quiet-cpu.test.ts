import { describe, expect, it } from 'vitest';
import { describeQuiet, waitForQuietCpu } from '../../../lab/quiet-cpu.ts';

describe('waitForQuietCpu', () => {
  it('returns after the first window that is idle enough', async () => {
    const s = await waitForQuietCpu({ idleShare: 0, windowMs: 50, timeoutMs: 5000 });
    expect(s.quiet).toBe(true);
    expect(s.waitedMs).toBeLessThan(1000);
    expect(s.idleShare).toBeGreaterThanOrEqual(0);
    expect(s.idleShare).toBeLessThanOrEqual(1);
  });

  it('gives up at the timeout when no window is idle enough, and says so', async () => {
    const s = await waitForQuietCpu({ idleShare: 1.01, windowMs: 50, timeoutMs: 300 });
    expect(s.quiet).toBe(false);
    expect(s.waitedMs).toBeGreaterThanOrEqual(300);
    expect(describeQuiet(s)).toMatch(/^CPUs still busy after \d+ ms \(\d+ % idle\)$/);
  });
});
