// The driver of `edgemesh netlink-helper` (cni/client/netlink-helper.c, in the CNI client's
// static binary): one long-lived C process that does the per-pod veth/address/route work over
// rtnetlink, so that a pod's ADD and DEL start no process at all. Requests are pipelined in
// order; the queue is bounded; a helper that dies fails its pending requests
// (HelperFailedError, so the caller can redo the work with iproute2) and is restarted on the
// next one. A helper that keeps dying is left alone for a while (available() is false)
// instead of being respawned for every pod.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Logger } from '../log.ts';
import { inNetns } from './iproute2.ts';
import type { PodSpec, VethSpec } from './links.ts';

export class NetlinkError extends Error {
  readonly errno: number;
  constructor(op: string, errno: number, message: string) {
    super(`${op}: ${message} (errno ${errno})`);
    this.name = 'NetlinkError';
    this.errno = errno;
  }
}

/** The helper process itself failed (missing binary, crash, hang): the kernel said nothing. */
export class HelperFailedError extends NetlinkError {
  constructor(op: string, why: string) {
    super(op, 5, `netlink helper ${why}`);
    this.name = 'HelperFailedError';
  }
}

export const EEXIST = 17;

/** Consecutive helper failures after which it rests, and for how long. */
const FAILURES_BEFORE_REST = 3;
const REST_MS = 60_000;

export interface NetlinkHelperCounters {
  /** Helper processes started (the first one included). */
  starts: number;
  /** Helper processes that died or hung while the agent still needed them. */
  failures: number;
}

interface Pending {
  op: string;
  resolve: (gone: boolean) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** One argument of the line protocol: no whitespace (names and paths we checked or made). */
function word(value: string): string {
  if (!value || /\s/.test(value)) throw new NetlinkError('request', 22, `unusable argument "${value}"`);
  return value;
}

export class NetlinkHelper {
  private readonly binary: string;
  private readonly log: Logger | undefined;
  private readonly maxPending: number;
  private readonly timeoutMs: number;
  private readonly netns: string | undefined;
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private consecutiveFailures = 0;
  private restingUntil = 0;
  private closed = false;
  private readonly counts: NetlinkHelperCounters = { starts: 0, failures: 0 };

  /** `netns`: run the helper inside that named namespace (its links are made there). */
  constructor(binary: string, opts: { logger?: Logger; maxPending?: number; timeoutMs?: number; netns?: string } = {}) {
    this.binary = binary;
    this.netns = opts.netns;
    this.log = opts.logger;
    this.maxPending = opts.maxPending ?? 1024;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  /** False while a helper that failed repeatedly rests (or after close()): use iproute2. */
  available(): boolean {
    return !this.closed && Date.now() >= this.restingUntil;
  }

  counters(): NetlinkHelperCounters {
    return { ...this.counts };
  }

  private ensureChild(): ChildProcess {
    if (this.child && this.child.exitCode === null && !this.child.killed) return this.child;
    const [file, args] = this.netns
      ? inNetns(this.netns, this.binary, ['netlink-helper'])
      : [this.binary, ['netlink-helper']];
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.counts.starts++;
    child.stdin!.on('error', () => undefined); // reported through 'exit'
    child.stderr!.on('data', (d: Buffer) => this.log?.warn({ helper: d.toString().trim() }, 'netlink helper'));
    createInterface({ input: child.stdout! }).on('line', (line) => this.onReply(line));
    let failed = false;
    const fail = (why: string) => {
      if (failed) return; // 'error' and 'exit' may both come
      failed = true;
      if (this.child === child) this.child = undefined;
      if (!this.closed) this.countFailure(why);
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new HelperFailedError(p.op, why));
      }
    };
    child.on('exit', (code, signal) => fail(`exited (${signal ?? code})`));
    child.on('error', (err) => fail(`failed: ${err.message}`));
    return child;
  }

  private countFailure(why: string): void {
    this.counts.failures++;
    this.consecutiveFailures++;
    if (this.consecutiveFailures >= FAILURES_BEFORE_REST) {
      this.restingUntil = Date.now() + REST_MS;
      this.consecutiveFailures = 0;
      this.log?.error({ why, restSeconds: REST_MS / 1000 }, 'netlink helper keeps failing; using iproute2 for now');
    } else {
      this.log?.warn({ why }, 'netlink helper failed; the next request starts a new one');
    }
  }

  private onReply(line: string): void {
    const [status, idText, errnoText, ...rest] = line.split(' ');
    const id = Number(idText);
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    this.consecutiveFailures = 0;
    if (status === 'ok') p.resolve(false);
    else if (status === 'gone') p.resolve(true);
    else p.reject(new NetlinkError(p.op, Number(errnoText), rest.join(' ')));
  }

  private request(op: string, args: string[]): Promise<boolean> {
    if (!this.available()) return Promise.reject(new HelperFailedError(op, 'is resting after repeated failures'));
    if (this.pending.size >= this.maxPending) {
      return Promise.reject(new NetlinkError(op, 11, `netlink helper busy (${this.pending.size} requests waiting)`));
    }
    let line: string;
    try {
      line = [op, String(this.nextId), ...args.map(word)].join(' ');
    } catch (err) {
      return Promise.reject(err);
    }
    const id = this.nextId++;
    const { promise, resolve, reject } = Promise.withResolvers<boolean>();
    const child = this.ensureChild();
    // A helper that stops answering is killed: its pending requests fail, the next one restarts it.
    const timer = setTimeout(() => {
      this.log?.error({ op, timeoutMs: this.timeoutMs }, 'netlink helper did not answer; restarting it');
      child.kill('SIGKILL');
    }, this.timeoutMs);
    this.pending.set(id, { op, resolve, reject, timer });
    child.stdin!.write(`${line}\n`);
    return promise;
  }

  /**
   * A whole ADD in one request: host veth `host` (on `bridge`, up) whose peer is born inside
   * `netns` as `podIfname`, then inside the pod addresses (no DAD), link up, default routes.
   */
  async addPod(o: VethSpec & Pick<PodSpec, 'addresses' | 'gateways'>): Promise<void> {
    const addrs = o.addresses.map((a) => `${a.address}/${a.prefixLength}`).join(',');
    await this.request('add', [
      ...[o.host, o.hostMac, String(o.mtu), o.bridge, o.podIfname, o.podMac, o.netns],
      ...[addrs, o.gateways.join(',')],
    ]);
  }

  /** Runs `fn` with the helper's input corked: the requests it makes go out as one write. */
  corked<T>(fn: () => T): T {
    const stdin = this.available() ? this.ensureChild().stdin : undefined;
    stdin?.cork();
    try {
      return fn();
    } finally {
      if (stdin) process.nextTick(() => stdin.uncork());
    }
  }

  /** Deletes a link by name; false when it did not exist. */
  async deleteLink(name: string): Promise<boolean> {
    return !(await this.request('del', [name]));
  }

  close(): void {
    this.closed = true;
    this.child?.stdin?.end();
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }
}
