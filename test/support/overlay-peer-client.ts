// Drives an overlay-peer.ts process inside a namespace: spawn, request/response, stop.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const PEER_SCRIPT = fileURLToPath(new URL('./overlay-peer.ts', import.meta.url));

export interface PeerProcessConfig {
  name: string;
  site: string;
  keyPath: string;
  listen: string[];
  announce?: string[];
  /** A fixed punch port; absent: the node draws its own and keeps it in `punchPortFile`. */
  punchPort?: number;
  punchPortFile?: string;
  relay: boolean;
  idleTimeoutMs?: number;
  autoPunch?: boolean;
  /** Check every frame's SHA-256 (tests); off for throughput measurements. */
  verify?: boolean;
  /** Open the native UDP data socket on the punch port (needs the addon built). */
  udp?: boolean;
  transport?: 'auto' | 'udp' | 'stream';
  /** Rekey UDP sessions this often (tests of rekeying under traffic). */
  udpRekeyAfterMs?: number;
  /** UDP relays: members build allocate datagrams; a relay node opens a UdpRelay on this port. */
  udpRelayPort?: number;
  /** A relay node opens its TCP splice (the relayed stream fallback) on this port. */
  splicePort?: number;
}

export class OverlayPeerProcess {
  readonly child: ChildProcess;
  readonly config: PeerProcessConfig;
  peerId = '';
  /** The port the node punches from (its own, as the agent picks it). */
  punchPort = 0;
  stderr = '';
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  readonly #ready: Promise<void>;

  constructor(netns: string, config: PeerProcessConfig) {
    this.config = config;
    this.child = spawn('ip', ['netns', 'exec', netns, process.execPath, PEER_SCRIPT, JSON.stringify(config)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      // Keep the tail only: bounded memory even for chatty logs.
      this.stderr = (this.stderr + d).slice(-200_000);
    });
    this.#ready = new Promise((resolve, reject) => {
      const rl = createInterface({ input: this.child.stdout! });
      rl.on('line', (line) => {
        let msg: {
          id?: number;
          ok?: boolean;
          result?: unknown;
          error?: string;
          event?: string;
          peerId?: string;
          punchPort?: number;
        };
        try {
          msg = JSON.parse(line);
        } catch {
          return;
        }
        if (msg.event === 'ready') {
          this.peerId = msg.peerId!;
          this.punchPort = msg.punchPort ?? 0;
          resolve();
          return;
        }
        const p = msg.id === undefined ? undefined : this.#pending.get(msg.id);
        if (!p) return;
        this.#pending.delete(msg.id!);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new Error(`${config.name}: ${msg.error}`));
      });
      this.child.once('exit', (code) => {
        const err = new Error(`${config.name} exited (${code}): ${this.stderr.slice(-2000)}`);
        reject(err);
        for (const p of this.#pending.values()) p.reject(err);
        this.#pending.clear();
      });
    });
    this.#ready.catch(() => {});
  }

  ready(): Promise<void> {
    return this.#ready;
  }

  request<T = unknown>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${this.config.name}: ${cmd} timed out`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    });
  }

  /** Stops gracefully, then kills after a grace period. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}
