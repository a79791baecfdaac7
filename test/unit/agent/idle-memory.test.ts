// The idle trimmer gives memory back in a series spaced by its interval once traffic stops,
// never while traffic moves and never again while the agent stays idle after the series.
import { describe, expect, it, vi } from 'vitest';
import { IdleMemoryTrimmer } from '../../../agent/idle-memory.ts';
import { BYTECODE_OLD_AGE } from '../../../agent/startup-memory.ts';

describe('IdleMemoryTrimmer', () => {
  it('releases at each quiet interval after traffic, up to its count, never while traffic moves', () => {
    let packets = 0;
    const release = vi.fn();
    const trimmer = new IdleMemoryTrimmer({ activity: () => packets, release, releases: 3 });
    expect(trimmer.check()).toBe(false); // idle since start: nothing grew
    packets += 100;
    expect(trimmer.check()).toBe(false); // traffic
    packets += 5;
    expect(trimmer.check()).toBe(false); // still traffic
    expect([trimmer.check(), trimmer.check(), trimmer.check()]).toEqual([true, true, true]); // the quiet spell's series
    expect(trimmer.check()).toBe(false); // still quiet, series done: left alone
    expect(trimmer.check()).toBe(false);
    packets += 1;
    expect(trimmer.check()).toBe(false); // traffic again
    expect(trimmer.check()).toBe(true);
    packets += 1;
    expect(trimmer.check()).toBe(false); // traffic ends the series and starts a new count
    expect([trimmer.check(), trimmer.check(), trimmer.check(), trimmer.check()]).toEqual([true, true, true, false]);
    expect(release).toHaveBeenCalledTimes(7);
    expect(trimmer.releases).toBe(7);
  });

  it('by default releases enough times for what only the traffic ran to age out of V8', () => {
    let packets = 0;
    const release = vi.fn();
    const trimmer = new IdleMemoryTrimmer({ activity: () => packets, release });
    packets = 1;
    trimmer.check();
    for (let i = 0; i < 20; i++) trimmer.check();
    expect(release).toHaveBeenCalledTimes(BYTECODE_OLD_AGE + 1);
  });

  it('runs on its interval until stopped', async () => {
    vi.useFakeTimers();
    try {
      let packets = 0;
      const release = vi.fn();
      const trimmer = new IdleMemoryTrimmer({ activity: () => packets, release, intervalMs: 1000, releases: 2 });
      trimmer.start();
      packets = 10;
      await vi.advanceTimersByTimeAsync(1000); // sees traffic
      await vi.advanceTimersByTimeAsync(1000); // quiet: releases
      expect(release).toHaveBeenCalledTimes(1);
      await vi.advanceTimersByTimeAsync(1000); // still quiet: the series' second
      expect(release).toHaveBeenCalledTimes(2);
      trimmer.stop();
      packets = 20;
      await vi.advanceTimersByTimeAsync(5000);
      expect(release).toHaveBeenCalledTimes(2);
    } finally {
      vi.useRealTimers();
    }
  });
});
