// A memory-reducing collection gives back what a burst of allocations grew the heap to: the
// one after start-up (with its series for bytecode ageing) and the one after traffic.
import { describe, expect, it } from 'vitest';
import { releaseIdleMemory, releaseStartupMemory } from '../../../agent/startup-memory.ts';

describe.each([
  ['releaseStartupMemory', releaseStartupMemory],
  ['releaseIdleMemory', releaseIdleMemory],
])('%s', (_name, release) => {
  it('shrinks the heap after a burst of short-lived allocations', () => {
    let keep: unknown[] = [];
    for (let i = 0; i < 400_000; i++) keep.push({ i, s: `object ${i}` });
    const grown = process.memoryUsage().heapTotal;
    keep = [];
    expect(keep).toHaveLength(0);
    expect(release()).toBe(true);
    const after = process.memoryUsage().heapTotal;
    expect(after).toBeLessThan(grown - 10 * 1024 * 1024);
  });
});
