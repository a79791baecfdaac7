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
// (100.1 → 99.1, 98.6 MiB RSS), some tens of ms once; a dropped function that runs again is
// compiled again then. The same moment saves Node's compile cache where an operator
// enabled it instead of the agent's own cache of stripped sources (bin/stripped-sources.js).
import { flushCompileCache } from 'node:module';
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
 * Saves Node's compile cache (if enabled), runs memory-reducing full collections (enough for start-up's
 * bytecode to age out), then hands what the C
 * heaps hold free back to the kernel (what start-up freed there, V8's own among it: the
 * collection frees some of it, so the trim comes after); false when this V8 offers no
 * collection.
 */
export function releaseStartupMemory(deps: ReleaseDeps = {}): boolean {
  // A no-op where Node's compile cache is not in use (the agent's own cache of stripped
  // sources, bin/stripped-sources.js, tidies itself).
  flushCompileCache?.();
  return collectAndTrim(BYTECODE_OLD_AGE + 1, deps);
}

/**
 * What traffic grew, given back once the agent is idle (agent/idle-memory.ts), or at
 * start-up when traffic already flows: one memory-reducing collection (not the start-up's
 * series: it would stall the loop, which reads the TUN on small nodes, and drop the data
 * path's bytecode) and a trim of the C heaps; false when this V8 offers no collection.
 */
export function releaseIdleMemory(deps: ReleaseDeps = {}): boolean {
  return collectAndTrim(1, deps);
}

/** The collection and the trim, replaceable in tests. */
export interface ReleaseDeps {
  gc?: GcFunction | undefined;
  trim?: () => void;
}

function collectAndTrim(collections: number, deps: ReleaseDeps): boolean {
  const gc = 'gc' in deps ? deps.gc : gcFunction();
  if (!gc) return false;
  for (let i = 0; i < collections; i++) gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  (deps.trim ?? trimNativeHeap)();
  return true;
}
