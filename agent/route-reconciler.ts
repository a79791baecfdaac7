// Keeps the kernel's pod routes equal to a desired set that changes as peers come and go.
// Changes are coalesced (a burst of Node events → one `ip -batch`) and applied one run at
// a time; a failure is logged and retried, never thrown into the informer.

import type { RouteSpec } from '../common/host-net/index.ts';
import type { Logger } from '../common/log.ts';
import { reconcileRoutes } from './host-routes.ts';

export class RouteReconciler {
  private readonly desired: () => Promise<RouteSpec[]>;
  private readonly clusterCidrs: string[];
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private dirty = false;
  private stopped = false;
  /** Completed runs (tests wait on this). */
  runs = 0;
  failures = 0;
  lastError: string | null = null;

  constructor(opts: { desired: () => Promise<RouteSpec[]>; clusterCidrs: string[]; logger: Logger }) {
    this.desired = opts.desired;
    this.clusterCidrs = opts.clusterCidrs;
    this.log = opts.logger;
  }

  /** Asks for a run soon (coalesced with others within `delayMs`). */
  schedule(delayMs = 50): void {
    if (this.stopped) return;
    this.dirty = true;
    if (this.timer || this.running) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.runNow();
    }, delayMs);
  }

  /** Runs now (waits for a run in progress first); resolves when the kernel matches. */
  async runNow(): Promise<void> {
    while (this.running) await this.running;
    if (this.stopped) return;
    this.dirty = false;
    this.running = this.once().finally(() => {
      this.running = undefined;
      if (this.dirty) this.schedule(this.lastError === null ? 50 : 1000);
    });
    await this.running;
  }

  private async once(): Promise<void> {
    try {
      const desired = await this.desired();
      const { removed } = await reconcileRoutes(desired, this.clusterCidrs);
      this.runs++;
      this.lastError = null;
      if (removed.length > 0) this.log.info({ removed: removed.map((r) => r.dst) }, 'removed stale pod routes');
      this.log.debug({ routes: desired.length }, 'pod routes reconciled');
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      this.dirty = true;
      this.log.error({ err: (err as Error).message }, 'reconciling pod routes failed; will retry');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
