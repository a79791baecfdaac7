// One memory-reducing collection gives back what a burst of allocations grew the heap to.
import { describe, expect, it } from 'vitest';
import { releaseStartupMemory } from '../../../agent/startup-memory.ts';

describe('releaseStartupMemory', () => {
  it('shrinks the heap after a burst of short-lived allocations', () => {
    let keep: unknown[] = [];
    for (let i = 0; i < 400_000; i++) keep.push({ i, s: `object ${i}` });
    const grown = process.memoryUsage().heapTotal;
    keep = [];
    expect(keep).toHaveLength(0);
    expect(releaseStartupMemory()).toBe(true);
    const after = process.memoryUsage().heapTotal;
    expect(after).toBeLessThan(grown - 10 * 1024 * 1024);
  });
});
