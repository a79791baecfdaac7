// A memory-reducing collection gives back what a burst of allocations grew the heap to: the
// series after start-up (until start-up's bytecode has aged out) and the single one after
// traffic, each followed by a trim of the C heaps.
import { describe, expect, it, vi } from 'vitest';
import { releaseIdleMemory, releaseStartupMemory } from '../../../agent/startup-memory.ts';

describe.each([
  ['releaseStartupMemory', releaseStartupMemory, 7],
  ['releaseIdleMemory', releaseIdleMemory, 1],
])('%s', (_name, release, collections) => {
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

  it(`runs ${collections} memory-reducing collection(s), then one trim`, () => {
    const order: string[] = [];
    const gc = vi.fn(() => order.push('gc'));
    expect(release({ gc, trim: () => order.push('trim') })).toBe(true);
    expect(order).toEqual([...Array(collections).fill('gc'), 'trim']);
    expect(gc).toHaveBeenCalledWith({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  });

  it('does nothing where V8 offers no collection', () => {
    const trim = vi.fn();
    expect(release({ gc: undefined, trim })).toBe(false);
    expect(trim).not.toHaveBeenCalled();
  });
});
