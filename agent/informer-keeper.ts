// Keeps a client-node informer running. Its ListWatch stops for good on an error it reports
// (the API server restarted, a connection was refused): it must be started again, and a
// start can itself fail or report the next error before it returns. One restart at a time,
// with a backoff that doubles up to 30 s and resets once a start went through, so a long
// API-server outage neither stops the watch for ever nor runs several watches at once.
import type { ErrorCallback } from '@kubernetes/client-node';
import type { Logger } from '../common/log.ts';

const FIRST_DELAY_MS = 2000;
const MAX_DELAY_MS = 30_000;

/** What the keeper needs of an informer. */
export interface Restartable {
  start(): Promise<void>;
  on(verb: 'error', cb: ErrorCallback): void;
}

export interface InformerKeeperOptions {
  log: Logger;
  /** What is watched, for the log: "Node", "IPAMBlock". */
  what: string;
  /** The first restart's delay (tests use a short one). */
  firstDelayMs?: number;
}

export class InformerKeeper {
  /** Errors the informer reported or starts that failed (each is followed by a restart). */
  errors = 0;
  readonly #informer: Restartable;
  readonly #o: InformerKeeperOptions;
  readonly #firstDelayMs: number;
  #delayMs: number;
  #timer: NodeJS.Timeout | undefined;
  #starting = false;
  /** An error reported while a start was running: handled once that start returns. */
  #errorDuringStart: { err: unknown } | undefined;
  #stopped = false;

  constructor(informer: Restartable, opts: InformerKeeperOptions) {
    this.#informer = informer;
    this.#o = opts;
    this.#firstDelayMs = opts.firstDelayMs ?? FIRST_DELAY_MS;
    this.#delayMs = this.#firstDelayMs;
    informer.on('error', (err: unknown) => this.#failed(err));
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #failed(err: unknown): void {
    this.errors++;
    if (this.#starting) {
      this.#errorDuringStart = { err };
      return;
    }
    this.#schedule(err);
  }

  #schedule(err: unknown): void {
    // A restart already pending covers this error too.
    if (this.#stopped || this.#timer !== undefined) return;
    const delay = this.#delayMs;
    this.#delayMs = Math.min(this.#delayMs * 2, MAX_DELAY_MS);
    this.#o.log.warn(
      { err: (err as Error)?.message ?? String(err), retryInMs: delay },
      `${this.#o.what} watch failed; restarting`,
    );
    this.#timer = setTimeout(() => void this.#restart(), delay);
  }

  async #restart(): Promise<void> {
    this.#timer = undefined;
    if (this.#stopped) return;
    this.#starting = true;
    this.#errorDuringStart = undefined;
    try {
      await this.#informer.start();
    } catch (err) {
      this.errors++;
      this.#errorDuringStart = { err };
    } finally {
      this.#starting = false;
    }
    const failure = this.#errorDuringStart;
    this.#errorDuringStart = undefined;
    if (failure !== undefined) this.#schedule(failure.err);
    else this.#delayMs = this.#firstDelayMs;
  }
}
