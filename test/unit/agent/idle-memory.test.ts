// The idle trimmer gives memory back once per quiet spell after traffic, never while traffic
// moves, and while the agent stays idle only once its heap has grown by the drift allowed.
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

  it('releases an idle agent again once its heap has grown by driftBytes over its lowest', () => {
    let used = 30;
    const release = vi.fn(() => {
      used = 28; // what the collection gave back
    });
    const trimmer = new IdleMemoryTrimmer({ activity: () => 0, release, heapUsed: () => used, driftBytes: 2 });
    expect(trimmer.check()).toBe(false); // the floor: 30
    used = 31.9;
    expect(trimmer.check()).toBe(false); // grown 1.9: left alone
    used = 29; // V8 collected by itself: the floor follows it down
    expect(trimmer.check()).toBe(false);
    used = 30.9;
    expect(trimmer.check()).toBe(false); // 1.9 over the new floor
    used = 31;
    expect(trimmer.check()).toBe(true); // 2 over it: released
    expect(release).toHaveBeenCalledTimes(1);
    used = 29.9;
    expect(trimmer.check()).toBe(false); // 1.9 over what the release left
    used = 30;
    expect(trimmer.check()).toBe(true);
    expect(trimmer.releases).toBe(2);
  });

  it('does not count idle growth while traffic moves, and resets the floor at the release after it', () => {
    let packets = 0;
    let used = 30;
    const release = vi.fn(() => {
      used = 31;
    });
    const trimmer = new IdleMemoryTrimmer({ activity: () => packets, release, heapUsed: () => used, driftBytes: 2 });
    expect(trimmer.check()).toBe(false);
    packets = 10;
    used = 60; // traffic grows the heap: not a drift
    expect(trimmer.check()).toBe(false);
    expect(trimmer.check()).toBe(true); // the quiet interval after traffic
    used = 32.9;
    expect(trimmer.check()).toBe(false); // 1.9 over 31, what that release left
    expect(release).toHaveBeenCalledTimes(1);
  });
});
