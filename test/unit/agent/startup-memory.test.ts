// A memory-reducing collection gives back what a burst of allocations grew the heap to: the
// series after start-up (until start-up's bytecode has aged out, one collection per turn of
// the event loop) and the single one after traffic, each followed by a trim of the C heaps.
import { describe, expect, it, vi } from 'vitest';
import { releaseIdleMemory, releaseStartupMemory } from '../../../agent/startup-memory.ts';

describe.each([
  ['releaseStartupMemory', releaseStartupMemory, 7],
  ['releaseIdleMemory', releaseIdleMemory, 1],
])('%s', (_name, release, collections) => {
  it('shrinks the heap after a burst of short-lived allocations', async () => {
    let keep: unknown[] = [];
    for (let i = 0; i < 400_000; i++) keep.push({ i, s: `object ${i}` });
    const grown = process.memoryUsage().heapTotal;
    keep = [];
    expect(keep).toHaveLength(0);
    expect(await release({ gapMs: 1 })).toBe(true);
    const after = process.memoryUsage().heapTotal;
    expect(after).toBeLessThan(grown - 10 * 1024 * 1024);
  });

  it(`runs ${collections} memory-reducing collection(s), then one trim`, async () => {
    const order: string[] = [];
    const gc = vi.fn(() => order.push('gc'));
    expect(await release({ gc, trim: () => order.push('trim'), gapMs: 1 })).toBe(true);
    expect(order).toEqual([...Array(collections).fill('gc'), 'trim']);
    expect(gc).toHaveBeenCalledWith({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  });

  it('says how long each collection held the event loop', async () => {
    const held: number[] = [];
    const gc = () => {
      const until = performance.now() + 5;
      while (performance.now() < until); // a collection that takes 5 ms
    };
    await release({ gc, trim: () => {}, gapMs: 1, onCollection: (ms) => held.push(ms) });
    expect(held).toHaveLength(collections);
    for (const ms of held) expect(ms).toBeGreaterThanOrEqual(5);
  });

  it('does nothing where V8 offers no collection', async () => {
    const trim = vi.fn();
    expect(await release({ gc: undefined, trim })).toBe(false);
    expect(trim).not.toHaveBeenCalled();
  });
});

describe('releaseStartupMemory', () => {
  it('lets the event loop run between its collections, gapMs apart', async () => {
    const order: string[] = [];
    const at: number[] = [];
    const gc = () => {
      order.push('gc');
      at.push(performance.now());
    };
    // Work that was waiting when the series started (a TUN read, a keepalive) runs after the
    // first collection, not after the seventh.
    setImmediate(() => order.push('waiting work'));
    await releaseStartupMemory({ gc, trim: () => {}, gapMs: 20 });
    expect(order.slice(0, 3)).toEqual(['gc', 'waiting work', 'gc']);
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(18);
  });
});
