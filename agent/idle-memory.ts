// An agent whose traffic stops keeps what the traffic grew: V8's young generation at its cap,
// the free pages of its heap, glibc's free blocks. V8 shrinks the heap only when it collects,
// and an idle agent hardly allocates, so a node that carried a burst an hour ago would hold
// that memory until the next burst. Once the forwarder has moved no packet for a whole
// interval after moving some, one memory-reducing collection and a trim of the C heaps give
// it back (agent/startup-memory.ts releaseIdleMemory); the next burst grows them again.
// One collection per quiet spell, not one per interval: a node that stays idle is left alone,
// until its idle chores (keepalives, probes, scrapes) have piled up `driftBytes` of heap.
// What they allocate outlives the young generation's collections and waits in the old one
// for a full collection, which allocation this slow takes a long time to bring about: a lab
// agent's old space grew 0.35 MiB a minute, and its RSS with it, all of it garbage (a full
// collection took the heap from 33.3 to 29.8 MiB used and RSS from 110.0 to 105.5 MiB).

export interface IdleMemoryOptions {
  /** A count that grows while the agent carries traffic (packets the forwarder moved). */
  activity: () => number;
  /** Gives the memory back. */
  release: () => void;
  /** How long without traffic counts as idle (default 30 s). */
  intervalMs?: number;
  /** V8 heap bytes in use now; absent: no release for idle growth. */
  heapUsed?: () => number;
  /** Heap growth over its lowest since the last release that makes an idle agent release again (default 2 MiB). */
  driftBytes?: number;
}

const DEFAULT_DRIFT_BYTES = 2 * 1024 * 1024;

export class IdleMemoryTrimmer {
  readonly #o: IdleMemoryOptions;
  #last: number;
  /** Traffic moved since the last release: the next quiet interval releases. */
  #grown = false;
  /** The heap in use at its lowest since the last release (V8's own collections lower it too). */
  #floor = Number.POSITIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  /** How many times memory was given back. */
  releases = 0;

  constructor(opts: IdleMemoryOptions) {
    this.#o = opts;
    this.#last = opts.activity();
  }

  start(): void {
    this.#timer ??= setInterval(() => this.check(), this.#o.intervalMs ?? 30_000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * One interval's look: releases if traffic moved before and none since the last look, or
   * if the agent stayed idle while its heap grew by driftBytes. Returns whether it released.
   */
  check(): boolean {
    const now = this.#o.activity();
    const moved = now !== this.#last;
    this.#last = now;
    if (moved) {
      this.#grown = true;
      return false;
    }
    if (this.#grown) {
      this.#grown = false;
      this.#release();
      return true;
    }
    const used = this.#o.heapUsed?.();
    if (used === undefined) return false;
    this.#floor = Math.min(this.#floor, used);
    if (used - this.#floor < (this.#o.driftBytes ?? DEFAULT_DRIFT_BYTES)) return false;
    this.#release();
    return true;
  }

  #release(): void {
    this.#o.release();
    this.releases++;
    this.#floor = this.#o.heapUsed?.() ?? Number.POSITIVE_INFINITY;
  }
}
