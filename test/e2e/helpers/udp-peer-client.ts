// Drives udp-peer.ts inside a lab namespace: send datagrams from one bound port, see every
// datagram that arrives (solicited or not), and ask a reflector for this socket's mapping.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./udp-peer.ts', import.meta.url));

export interface Datagram {
  from: string;
  data: string;
}

export class UdpPeer {
  readonly received: Datagram[] = [];
  private readonly child: ChildProcess;
  private readonly waiters = new Set<() => void>();
  private sent = 0;

  private constructor(child: ChildProcess) {
    this.child = child;
  }

  /** Starts a peer bound to 0.0.0.0:`port` in `netns`; resolves once it is bound. */
  static async start(netns: string, port: number, opts: { reflect?: boolean } = {}): Promise<UdpPeer> {
    const args = [
      'netns',
      'exec',
      netns,
      process.execPath,
      script,
      String(port),
      ...(opts.reflect ? ['--reflect'] : []),
    ];
    const child = spawn('ip', args, { stdio: ['pipe', 'pipe', 'inherit'] });
    const peer = new UdpPeer(child);
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`udp-peer in ${netns}:${port} exited (${code})`)));
      lines.on('line', (line) => {
        if (line === 'ready') return resolve();
        peer.received.push(JSON.parse(line) as Datagram);
        for (const wake of peer.waiters) wake();
      });
    });
    return peer;
  }

  send(to: string, data: string): void {
    this.sent++;
    this.child.stdin!.write(`${JSON.stringify({ to, data })}\n`);
  }

  /** The first received datagram matching `pred` within `timeoutMs`, or null. */
  async waitFor(pred: (d: Datagram) => boolean, timeoutMs: number): Promise<Datagram | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.received.find(pred);
      if (hit) return hit;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
  }

  /**
   * This socket's public mapping as `reflector` (a peer started with reflect) observes it:
   * probes every 250 ms (a datagram may be lost) until the answer or the timeout (null).
   */
  async mappingSeenBy(reflector: string, timeoutMs = 5000): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      this.send(reflector, `probe ${this.sent}`);
      const answer = await this.waitFor((d) => d.from === reflector && d.data.startsWith('seen '), 250);
      if (answer) return answer.data.slice('seen '.length);
    }
    return null;
  }

  /** Closes the socket and waits for the process to end (SIGKILL after 3 s). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}
