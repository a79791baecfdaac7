// The idle trimmer gives memory back once per quiet spell after traffic, never while traffic
// moves and never again while the agent stays idle.
import { describe, expect, it, vi } from 'vitest';
import { IdleMemoryTrimmer } from '../../../agent/idle-memory.ts';

describe('IdleMemoryTrimmer', () => {
  it('releases once after traffic stops, not while it moves, not again while idle', () => {
    let packets = 0;
    const release = vi.fn();
    const trimmer = new IdleMemoryTrimmer({ activity: () => packets, release });
    expect(trimmer.check()).toBe(false); // idle since start: nothing grew
    packets += 100;
    expect(trimmer.check()).toBe(false); // traffic
    packets += 5;
    expect(trimmer.check()).toBe(false); // still traffic
    expect(trimmer.check()).toBe(true); // a quiet interval after traffic
    expect(trimmer.check()).toBe(false); // still quiet: left alone
    expect(trimmer.check()).toBe(false);
    packets += 1;
    expect(trimmer.check()).toBe(false);
    expect(trimmer.check()).toBe(true); // the next quiet spell
    expect(release).toHaveBeenCalledTimes(2);
    expect(trimmer.releases).toBe(2);
  });

  it('runs on its interval until stopped', async () => {
    vi.useFakeTimers();
    try {
      let packets = 0;
      const release = vi.fn();
      const trimmer = new IdleMemoryTrimmer({ activity: () => packets, release, intervalMs: 1000 });
      trimmer.start();
      packets = 10;
      await vi.advanceTimersByTimeAsync(1000); // sees traffic
      await vi.advanceTimersByTimeAsync(1000); // quiet: releases
      expect(release).toHaveBeenCalledTimes(1);
      trimmer.stop();
      packets = 20;
      await vi.advanceTimersByTimeAsync(5000);
      expect(release).toHaveBeenCalledTimes(1);
    } finally {
      vi.useRealTimers();
    }
  });
});
