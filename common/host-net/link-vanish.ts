// Waits for network interfaces to disappear from the current namespace's listing. Deleting a
// veth unlists both ends at once, but the kernel then waits for an RCU barrier (about 20 ms
// here, more under load) before the netlink call returns; a DEL is done when the devices are
// gone, not when the kernel has freed them. One poller of /proc/self/net/dev (no process)
// serves every waiter and runs only while someone waits. It reads synchronously: procfs
// answers from memory in microseconds, while an async read queues behind the lease store's
// fdatasyncs in libuv's thread pool during a burst of DELs.
import { readFileSync } from 'node:fs';

/** Interface names of the current network namespace (/proc/self/net follows the caller's). */
export function listedLinks(): Set<string> {
  const lines = readFileSync('/proc/self/net/dev', 'utf8').split('\n').slice(2);
  return new Set(lines.map((line) => line.split(':')[0]?.trim() ?? '').filter(Boolean));
}

const POLL_MS = 1;

interface Waiter {
  name: string;
  resolve: () => void;
}

export class LinkVanishWatch {
  private readonly waiters = new Set<Waiter>();
  private timer: NodeJS.Timeout | undefined;

  /** Resolves once `name` is not listed any more; cancel() stops waiting (the promise then never settles). */
  wait(name: string): { gone: Promise<void>; cancel: () => void } {
    const { promise, resolve } = Promise.withResolvers<void>();
    const waiter: Waiter = { name, resolve };
    this.waiters.add(waiter);
    this.schedule();
    return { gone: promise, cancel: () => this.waiters.delete(waiter) };
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => this.poll(), POLL_MS);
  }

  private poll(): void {
    let present: Set<string> | undefined;
    try {
      present = listedLinks();
    } catch {
      // /proc unreadable for a moment: the netlink answer still settles the DEL.
    }
    this.timer = undefined;
    for (const w of this.waiters) {
      if (present && !present.has(w.name)) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
    if (this.waiters.size > 0) this.schedule();
  }
}
