// The netlink backend: the per-pod operations (attachPod, deleteLink) go to the long-lived
// `edgemesh netlink-helper` (common/host-net/netlink-helper.ts) so that a pod's ADD and DEL
// start no process; everything else, and any operation whose helper failed (the process, not
// the kernel), is done with iproute2. Each such fallback is counted.
import type { Logger } from '../log.ts';
import { type HostNet, type HostNetCounters, iproute2HostNet } from './host-net.ts';
import type { NetnsOption } from './iproute2.ts';
import { LinkVanishWatch, listedLinks } from './link-vanish.ts';
import type { PodSpec, VethSpec } from './links.ts';
import { HelperFailedError, NetlinkHelper } from './netlink-helper.ts';

export interface NetlinkHostNetOptions extends NetnsOption {
  /** The `edgemesh` binary (the C CNI client), run as `edgemesh netlink-helper`. */
  binary: string;
  logger?: Logger;
  /** A helper that has not answered a request in this time is killed (default 30 s). */
  timeoutMs?: number;
}

/** Host networking with the helper for the operations it covers, iproute2 for the rest. */
export function netlinkHostNet(opts: NetlinkHostNetOptions): HostNet {
  const iproute2 = iproute2HostNet(opts);
  const plumbing = new HelperPlumbing(opts, iproute2);
  return {
    ...iproute2,
    backend: 'netlink',
    attachPod: (veth, pod) => plumbing.attachPod(veth, pod),
    deleteLink: (name) => plumbing.deleteLink(name),
    counters: () => plumbing.counters(),
    close: () => plumbing.close(),
  };
}

class HelperPlumbing {
  private readonly helper: NetlinkHelper;
  private readonly iproute2: HostNet;
  private readonly log: Logger | undefined;
  /** Whether "gone" can be read from this process's own listing (/proc/self/net/dev). */
  private readonly listedHere: boolean;
  private readonly vanish = new LinkVanishWatch();
  private readonly queuedDeletes: Array<{ name: string; done: PromiseWithResolvers<boolean> }> = [];
  private deleting = false;
  private iproute2Fallbacks = 0;

  constructor(opts: NetlinkHostNetOptions, iproute2: HostNet) {
    this.log = opts.logger;
    this.helper = new NetlinkHelper(opts.binary, {
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.netns ? { netns: opts.netns } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    });
    this.iproute2 = iproute2;
    this.listedHere = !opts.netns;
  }

  counters(): HostNetCounters {
    const { starts, failures } = this.helper.counters();
    return { helperStarts: starts, helperFailures: failures, iproute2Fallbacks: this.iproute2Fallbacks };
  }

  close(): void {
    this.helper.close();
  }

  attachPod(veth: VethSpec, pod: PodSpec): Promise<void> {
    return this.viaHelper(
      (h) => h.addPod({ ...veth, ...pod, podIfname: pod.ifname }),
      () => this.iproute2.attachPod(veth, pod),
    );
  }

  /** The helper when it works; iproute2 when the helper process (not the kernel) failed. */
  private async viaHelper<T>(op: (helper: NetlinkHelper) => Promise<T>, fallback: () => Promise<T>): Promise<T> {
    if (this.helper.available()) {
      try {
        return await op(this.helper);
      } catch (err) {
        if (!(err instanceof HelperFailedError)) throw err;
      }
    }
    this.iproute2Fallbacks++;
    return fallback();
  }

  /**
   * Deletes a link through the helper and returns as soon as the kernel has unlisted it (both
   * veth ends go at once), not when the netlink call returns: that waits for an RCU barrier
   * (20 ms and more on a busy node) after the device is already gone. The helper runs
   * deletions on worker threads, so nothing else queues behind that barrier.
   *
   * Deletions are group-committed: while one batch is being unlisted, new deletions wait and
   * then go to the helper together, as one group delete. Measured with 20 deletions: one group
   * is unlisted in about 2 ms, 20 separate ones 0.7 ms apart take 17–43 ms (each holds the
   * kernel's rtnl lock through its own RCU synchronisation). A lone deletion waits for nothing.
   */
  deleteLink(name: string): Promise<boolean> {
    if (this.listedHere && !listedLinks().has(name)) return Promise.resolve(false);
    const done = Promise.withResolvers<boolean>();
    this.queuedDeletes.push({ name, done });
    if (!this.deleting) void this.deleteQueued();
    return done.promise;
  }

  private async deleteQueued(): Promise<void> {
    this.deleting = true;
    try {
      while (this.queuedDeletes.length > 0) {
        const batch = this.queuedDeletes.splice(0);
        // One write, so the helper reads the batch at once and deletes it as one group.
        const unlisted = this.helper.corked(() => batch.map((entry) => this.deleteOne(entry.name)));
        await Promise.all(unlisted.map((p, i) => p.then(batch[i]!.done.resolve, batch[i]!.done.reject)));
      }
    } finally {
      this.deleting = false;
    }
  }

  /** Resolves when `name` is unlisted (true) or the helper answered; rejects on a kernel error. */
  private deleteOne(name: string): Promise<boolean> {
    const deleted = this.viaHelper(
      (h) => h.deleteLink(name),
      () => this.iproute2.deleteLink(name),
    );
    if (!this.listedHere) return deleted;
    const watch = this.vanish.wait(name);
    deleted.then(watch.cancel, (err: Error) => {
      watch.cancel();
      this.log?.warn({ link: name, err: err.message }, 'link deletion failed');
    });
    return Promise.race([deleted, watch.gone.then(() => true)]);
  }
}
