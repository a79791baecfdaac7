// An agent whose traffic stops keeps what the traffic grew: V8's young generation at its cap,
// the free pages of its heap, glibc's free blocks, and the bytecode and feedback of every
// function the traffic ran once (dialling a peer, a Noise handshake, a pod's CNI ADD). V8
// shrinks the heap only when it collects, and drops a function's bytecode only once the
// function has sat out several collections (--bytecode-old-age); an idle agent hardly
// allocates, so it hardly collects, and a node that carried a burst an hour ago would hold
// all of that until the next burst. Once the forwarder has moved no packet for a whole
// interval after moving some, one memory-reducing collection and a trim of the C heaps
// (agent/startup-memory.ts releaseIdleMemory) run at each quiet interval, up to `releases`
// of them: a function that runs between two of them (keepalives, the metrics, Node watches)
// stays young and keeps its bytecode; one that ran only for the burst ages out and is
// compiled again if it runs again. Traffic ends the series; a node that stays idle after it
// is left alone. Back to back, the collections would age out everything, keepalives included.

import { BYTECODE_OLD_AGE } from './startup-memory.ts';

export interface IdleMemoryOptions {
  /** A count that grows while the agent carries traffic (packets the forwarder moved). */
  activity: () => number;
  /** Gives memory back: one collection and a trim. */
  release: () => void;
  /** How long without traffic counts as idle, and the spacing of the releases (default 10 s). */
  intervalMs?: number;
  /** Releases per quiet spell (default BYTECODE_OLD_AGE + 1: enough for what only the traffic ran to age out). */
  releases?: number;
}

export class IdleMemoryTrimmer {
  readonly #o: IdleMemoryOptions;
  #last: number;
  /** Releases still due in this quiet spell (traffic since the last spell sets it). */
  #due = 0;
  #timer: NodeJS.Timeout | undefined;
  /** How many times memory was given back. */
  releases = 0;

  constructor(opts: IdleMemoryOptions) {
    this.#o = opts;
    this.#last = opts.activity();
  }

  start(): void {
    this.#timer ??= setInterval(() => this.check(), this.#o.intervalMs ?? 10_000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One interval's look: releases if traffic moved before and none since the last look, while releases are due. Returns whether it released. */
  check(): boolean {
    const now = this.#o.activity();
    const moved = now !== this.#last;
    this.#last = now;
    if (moved) {
      this.#due = this.#o.releases ?? BYTECODE_OLD_AGE + 1;
      return false;
    }
    if (this.#due === 0) return false;
    this.#due--;
    this.#o.release();
    this.releases++;
    return true;
  }
}
