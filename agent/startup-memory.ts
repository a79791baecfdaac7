// Start-up loads tens of MB of modules and parses the first Node list: that grows V8's young
// generation to its cap and the heap to its high-water mark, and a node that then idles (most
// edge nodes, most of the time) would keep that memory for nothing, since V8 only shrinks the
// heap when it collects, and an idle agent hardly allocates. One memory-reducing full
// collection once the agent is ready gives it back: idle RSS 213 → 152 MiB
// (`node bench/agent-memory.ts`). The young generation grows again under traffic, up to the
// same cap, so forwarding is not affected. The bytecode of what only start-up ran (parsing
// the config, the first Node list, libp2p's set-up) stays too: V8 drops a function's
// bytecode once it has not run for BYTECODE_OLD_AGE collections, and an idle agent collects
// rarely. So the collection is repeated until that age is passed: about 1 MiB of heap
// (100.1 → 99.1, 98.6 MiB RSS); a dropped function that runs again is compiled again then.
// The series runs one collection per turn of the event loop, SERIES_GAP_MS apart: back to
// back, its seven last-resort collections held the loop (and so forwarding) for 404–466 ms
// in one piece on a quiet machine; one at a time, the first holds it for 119–139 ms and each
// after it for 48–68, and the idle agent's RSS is the same (98.7–98.8 MiB against
// 98.4–98.8; the agent logs the longest collection, `node bench/agent-memory.ts` prints it).
// Code that runs in the gaps (forwarding, keepalives) stays young, as it should. The same
// moment saves Node's compile cache where an operator enabled it instead of the agent's own
// cache of stripped sources (bin/stripped-sources.js).
import { flushCompileCache } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { trimNativeHeap } from '../dataplane/native-addon.ts';

/**
 * How long after start-up the release runs (the first Node events have settled). Its
 * collections take the agent's CPU for a moment: the lab's timings wait for it to pass
 * (lab/time-to-direct.ts), since there every node's agent shares the same few cores.
 */
export const STARTUP_RELEASE_DELAY_MS = 5000;

/** V8's --bytecode-old-age (its default, 6): collections a function must sit out before its bytecode goes. */
const BYTECODE_OLD_AGE = 6;
/** Between two collections of the start-up series: the loop runs what waited. */
const SERIES_GAP_MS = 50;

type GcFunction = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async'; flavor?: string }) => void;

/** V8's `gc` without --expose-gc on the command line: a new context gets the extension. */
function gcFunction(): GcFunction | undefined {
  const exposed = (globalThis as { gc?: GcFunction }).gc;
  if (exposed) return exposed;
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('typeof gc === "function" ? gc : undefined') as GcFunction | undefined;
  setFlagsFromString('--no-expose-gc');
  return gc;
}

/**
 * Saves Node's compile cache (if enabled), runs the memory-reducing full collections that
 * age start-up's bytecode out, one every SERIES_GAP_MS, then hands what the C heaps hold
 * free back to the kernel (the collections free some of it, so the trim comes last); false
 * when this V8 offers no collection.
 */
export async function releaseStartupMemory(deps: ReleaseDeps = {}): Promise<boolean> {
  // A no-op where Node's compile cache is not in use (the agent's own cache of stripped
  // sources, bin/stripped-sources.js, tidies itself).
  flushCompileCache?.();
  const gc = gcOf(deps);
  if (!gc) return false;
  for (let i = 0; i < BYTECODE_OLD_AGE + 1; i++) {
    if (i > 0) await sleep(deps.gapMs ?? SERIES_GAP_MS);
    collect(gc, deps);
  }
  (deps.trim ?? trimNativeHeap)();
  return true;
}

/**
 * What traffic grew, or what idle chores piled up, given back once the agent is idle
 * (agent/idle-memory.ts), or at start-up when traffic already flows: one memory-reducing
 * collection (not the start-up's series: its seven collections cost seven times the CPU,
 * and there is no start-up bytecode left to age out) and a trim of the C heaps; false when
 * this V8 offers no collection.
 */
export function releaseIdleMemory(deps: ReleaseDeps = {}): boolean {
  return collectAndTrim(1, deps);
}

/** The collection and the trim, replaceable in tests. */
export interface ReleaseDeps {
  gc?: GcFunction | undefined;
  trim?: () => void;
  /** Between the start-up series' collections (default SERIES_GAP_MS). */
  gapMs?: number;
  /** Told how long each collection held the event loop (ms). */
  onCollection?: (ms: number) => void;
}

function gcOf(deps: ReleaseDeps): GcFunction | undefined {
  return 'gc' in deps ? deps.gc : gcFunction();
}

function collect(gc: GcFunction, deps: ReleaseDeps): void {
  const started = performance.now();
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  deps.onCollection?.(performance.now() - started);
}

function collectAndTrim(collections: number, deps: ReleaseDeps): boolean {
  const gc = gcOf(deps);
  if (!gc) return false;
  for (let i = 0; i < collections; i++) collect(gc, deps);
  (deps.trim ?? trimNativeHeap)();
  return true;
}
