// Newline-terminated JSON messages on a libp2p stream, for the small signalling protocols
// (punch offers, observed-address queries). Bounded: a line longer than `maxBytes` aborts
// the stream, so a peer cannot make us buffer without limit.
import type { Stream } from '@libp2p/interface';

export type SignalFailure = 'bad-message' | 'signal-closed' | 'signal-timeout';

export function sendJsonLine(stream: Stream, msg: unknown): void {
  stream.send(new TextEncoder().encode(`${JSON.stringify(msg)}\n`));
}

export class JsonLineReader {
  #buf = '';
  readonly #lines: string[] = [];
  #waiter: ((line: string) => void) | undefined;
  #failer: ((err: Error) => void) | undefined;
  #failure: Error | undefined;
  readonly #decoder = new TextDecoder();
  readonly #fail: (reason: SignalFailure, message: string) => Error;

  constructor(stream: Stream, maxBytes: number, fail: (reason: SignalFailure, message: string) => Error) {
    this.#fail = fail;
    stream.addEventListener('message', (evt) => {
      this.#buf += this.#decoder.decode(evt.data.subarray(), { stream: true });
      if (this.#buf.length > maxBytes) {
        this.#buf = '';
        // Fail first: abort() fires 'close' at once, which would report a mere close.
        this.#failWith(fail('bad-message', 'signalling message too long'));
        stream.abort(new Error('signalling message too long'));
        return;
      }
      let nl = this.#buf.indexOf('\n');
      while (nl >= 0) {
        this.#lines.push(this.#buf.slice(0, nl));
        this.#buf = this.#buf.slice(nl + 1);
        nl = this.#buf.indexOf('\n');
      }
      this.#deliver();
    });
    stream.addEventListener('close', () => this.#failWith(fail('signal-closed', 'signalling stream closed')));
  }

  #failWith(err: Error): void {
    this.#failure ??= err;
    this.#failer?.(err);
  }

  #deliver(): void {
    if (this.#waiter && this.#lines.length > 0) this.#waiter(this.#lines.shift()!);
  }

  next(timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(this.#fail('signal-timeout', 'no answer in time')), timeoutMs);
      this.#waiter = (line) => {
        clearTimeout(timer);
        this.#waiter = undefined;
        try {
          resolve(JSON.parse(line));
        } catch {
          reject(this.#fail('bad-message', 'signalling message is not JSON'));
        }
      };
      this.#failer = (err) => {
        clearTimeout(timer);
        reject(err);
      };
      if (this.#lines.length > 0) this.#deliver();
      else if (this.#failure !== undefined) this.#failer(this.#failure);
    });
  }
}
