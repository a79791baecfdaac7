// A ping from a pod that starts on a signal. The process (`ip netns exec` → sh → ping) is
// spawned first and waits on its stdin, so every pair's first packet leaves within
// milliseconds of the moment the caller starts its clock, not after the spawns of all the
// pairs before it: `ip netns exec` took up to 0.6 s for the ninth of nine pairs started at
// once (the agents saw the first packets that late), time that counted against the punch.
import { type ChildProcess, spawn } from 'node:child_process';

const ARM_TIMEOUT_MS = 10_000;

export class ArmedPing {
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  /** Epoch ms of the first echo reply; undefined: none yet. */
  firstReplyAt: number | undefined;

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Spawns the ping in `netns` towards `target` (every `intervalSec`, replies waited 1 s) and resolves once it waits for fire(). */
  static async arm(netns: string, target: string, intervalSec = 0.2): Promise<ArmedPing> {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        netns,
        'sh',
        '-c',
        'echo armed; read go && exec ping -n -i "$1" -W 1 "$2"',
        'sh',
        String(intervalSec),
        target,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const ping = new ArmedPing(child);
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-2000);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`ping in ${netns} not armed within ${ARM_TIMEOUT_MS} ms`)),
          ARM_TIMEOUT_MS,
        );
        child.once('error', reject);
        child.once('exit', (code) =>
          reject(new Error(`ping in ${netns} exited (${code}) before it was fired: ${err.trim()}`)),
        );
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (ping.firstReplyAt === undefined && out.includes('bytes from')) ping.firstReplyAt = Date.now();
          if (out.includes('armed')) {
            clearTimeout(timer);
            resolve();
          }
          out = out.slice(-200);
        });
      });
    } catch (e) {
      await ping.stop();
      throw e;
    }
    return ping;
  }

  /** Sends the first packet now. */
  fire(): void {
    this.#child.stdin!.end('go\n');
  }

  /** Ends the ping (and waits for its exit). */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill('SIGTERM');
    const killer = setTimeout(() => this.#child.kill('SIGKILL'), 2000);
    await this.#exited;
    clearTimeout(killer);
  }
}
