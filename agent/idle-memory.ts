// An agent whose traffic stops keeps what the traffic grew: V8's young generation at its cap,
// the free pages of its heap, glibc's free blocks. V8 shrinks the heap only when it collects,
// and an idle agent hardly allocates, so a node that carried a burst an hour ago would hold
// that memory until the next burst. Once the forwarder has moved no packet for a whole
// interval after moving some, one memory-reducing collection and a trim of the C heaps give
// it back (agent/startup-memory.ts releaseIdleMemory); the next burst grows them again.
// One collection per quiet spell, not one per interval: a node that stays idle is left alone.

export interface IdleMemoryOptions {
  /** A count that grows while the agent carries traffic (packets the forwarder moved). */
  activity: () => number;
  /** Gives the memory back. */
  release: () => void;
  /** How long without traffic counts as idle (default 30 s). */
  intervalMs?: number;
}

export class IdleMemoryTrimmer {
  readonly #o: IdleMemoryOptions;
  #last: number;
  /** Traffic moved since the last release: the next quiet interval releases. */
  #grown = false;
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

  /** One interval's look: releases if traffic moved before and none since the last look. Returns whether it released. */
  check(): boolean {
    const now = this.#o.activity();
    const moved = now !== this.#last;
    this.#last = now;
    if (moved) {
      this.#grown = true;
      return false;
    }
    if (!this.#grown) return false;
    this.#grown = false;
    this.#o.release();
    this.releases++;
    return true;
  }
}
