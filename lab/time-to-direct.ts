// First packet → direct path, per node pair. Once the machine's CPUs are quiet (the lab's
// agents have finished starting, their start-up memory release included; lab/quiet-cpu.ts),
// the first pod of each source node pings the first pod of its destination node, all pairs
// at once as a busy cluster would (each ping spawned beforehand and fired together,
// lab/armed-ping.ts), and the source agent's path to the destination node is polled until no
// relay carries it or the timeout passes; a change counts at the time the agent took it
// (its status's pathSince). Used by the NAT matrix benchmark and the hole-punching e2e tests.
import { setTimeout as sleep } from 'node:timers/promises';
import { STARTUP_RELEASE_DELAY_MS } from '../agent/startup-memory.ts';
import type { PathKind } from '../agent/status.ts';
import { ArmedPing } from './armed-ping.ts';
import type { Lab } from './lab.ts';
import { type QuietCpu, waitForQuietCpu } from './quiet-cpu.ts';

export type Path = PathKind | 'unknown';

export interface PairResult {
  from: string;
  to: string;
  /** The path the source agent reported last. */
  finalPath: Path;
  /** Every path change the polls saw: ms after the first packet (the agent's time of it, where it gives one). */
  timeline: Array<{ path: Path; ms: number }>;
  /** First packet → the agent's switch to a direct path (seen by a poll); null: never within the timeout. */
  msToDirect: number | null;
  /** First packet → first ping reply (over whatever path); null: no reply at all. */
  msToFirstReply: number | null;
}

/**
 * Every node pair across two sites once; the first packet comes from `siteA`'s node for half
 * of the pairs and from `siteB`'s for the other half (alternating), so both NATs' nodes act
 * as initiator and as responder.
 */
export function crossSitePairs(
  lab: Pick<Lab, 'nodes'>,
  siteA: string,
  siteB: string,
): Array<{ from: string; to: string }> {
  const names = (site: string) => lab.nodes.filter((n) => n.site === site).map((n) => n.name);
  return names(siteA).flatMap((a, i) =>
    names(siteB).map((b, j) => ((i + j) % 2 === 0 ? { from: a, to: b } : { from: b, to: a })),
  );
}

/** A path counts as direct when no relay carries it (today: direct, hole-punched, host-gw). */
export function isDirect(path: Path): boolean {
  return path !== 'none' && path !== 'unknown' && !path.includes('relay');
}

export interface TimeToDirectOptions {
  timeoutMs: number;
  /** Poll interval of the agents' status: the resolution of the times (default 200 ms). */
  pollMs?: number;
  /** Called about every 5 s: pairs direct so far, how long since the first packet, time left. */
  progress?: (direct: number, total: number, elapsedMs: number, leftMs: number) => void;
  /**
   * Before the first packet, wait up to this long for the agents' start-up memory release to
   * pass, and as long again for the CPUs to go quiet (lab/quiet-cpu.ts); default 20 s, 0: no wait.
   */
  settleMs?: number;
  /** What that wait found, before the first packet. */
  onSettled?: (s: QuietCpu) => void;
}

/** Sends the first packets of every pair and times each until its path is direct. */
export async function measureTimeToDirect(
  lab: Lab,
  pairs: ReadonlyArray<{ from: string; to: string }>,
  opts: TimeToDirectOptions,
): Promise<PairResult[]> {
  const firstPod = (node: string) => lab.pods.find((p) => p.node === node && p.ips.length > 0);
  const sources = [...new Set(pairs.map((p) => p.from))];
  const results = pairs.map(
    ({ from, to }): PairResult => ({
      from,
      to,
      finalPath: 'unknown',
      timeline: [],
      msToDirect: null,
      msToFirstReply: null,
    }),
  );
  const settleMs = opts.settleMs ?? 20_000;
  if (settleMs > 0) {
    // The agents' start-up memory release comes a few seconds after they are ready and takes
    // every agent's CPU at once: past it first, then quiet.
    const released = lab.lastAgentReadyAt + STARTUP_RELEASE_DELAY_MS + 1000 - Date.now();
    if (released > 0) await sleep(Math.min(released, settleMs));
    opts.onSettled?.(await waitForQuietCpu({ timeoutMs: settleMs }));
  }
  // Every pair's ping is spawned first and waits: the first packets all leave at t0.
  const armed = await Promise.allSettled(
    results.map(async (r) => {
      const src = firstPod(r.from);
      const dst = firstPod(r.to);
      if (!src || !dst) throw new Error(`${r.from} → ${r.to}: both nodes need a pod with an address`);
      return ArmedPing.arm(src.netns, dst.ips[0]!);
    }),
  );
  const pings = armed.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
  const unarmed = armed.find((a) => a.status === 'rejected');
  if (unarmed) {
    await Promise.all(pings.map((p) => p.stop()));
    throw (unarmed as PromiseRejectedResult).reason;
  }
  const t0 = Date.now();
  const deadline = t0 + opts.timeoutMs;
  for (const p of pings) p.fire();
  // Paths: one status request per source node serves all its pairs.
  let lastReport = 0;
  try {
    while (Date.now() < deadline && results.some((r) => r.msToDirect === null)) {
      const statuses = new Map(
        await Promise.all(sources.map(async (n) => [n, await lab.agentStatus(n).catch(() => undefined)] as const)),
      );
      const polledMs = Date.now() - t0;
      for (const [i, r] of results.entries()) {
        const peer = statuses.get(r.from)?.peers.find((p) => p.node === r.to);
        const path: Path = peer?.path ?? 'unknown';
        // The agent's own time of the change where it says one, not the poll that saw it: the
        // polls lag on a busy machine.
        const since = peer?.pathSince === undefined ? Number.NaN : Date.parse(peer.pathSince) - t0;
        const ms = Number.isFinite(since) ? Math.min(polledMs, Math.max(0, since)) : polledMs;
        if (r.timeline.at(-1)?.path !== path) r.timeline.push({ path, ms });
        r.finalPath = path;
        if (r.msToDirect === null && isDirect(path)) {
          r.msToDirect = ms;
          void pings[i]!.stop();
        }
      }
      if (opts.progress && Date.now() - lastReport > 5000) {
        lastReport = Date.now();
        const direct = results.filter((r) => r.msToDirect !== null).length;
        opts.progress(direct, results.length, polledMs, Math.max(0, deadline - Date.now()));
      }
      await sleep(opts.pollMs ?? 200);
    }
  } finally {
    await Promise.all(pings.map((p) => p.stop()));
  }
  results.forEach((r, i) => {
    const at = pings[i]!.firstReplyAt;
    r.msToFirstReply = at === undefined ? null : at - t0;
  });
  return results;
}
