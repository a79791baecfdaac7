// The connectivity matrix: ping by Pod IP from the first pod of every node to the first pod
// of every other node (every site pair, both directions, and within each site), plus pod to
// pod on the same node, and the path each pair took as the source node's agent reports it.
import type { AgentStatus, PathKind } from '../agent/status.ts';
import type { Lab, LabPod } from './lab.ts';
import { pingFrom } from './network.ts';

export interface MatrixEntry {
  from: string;
  to: string;
  fromNode: string;
  toNode: string;
  fromSite: string;
  toSite: string;
  target: string;
  ok: boolean;
  rttMs: number | null;
  /** 'local' on one node; else the source agent's path to the destination node ('unknown': no agent status). */
  path: PathKind | 'local' | 'unknown';
  /** Seconds until the first reply (includes connection set-up on demand). */
  secondsToFirstReply: number | null;
}

export interface MatrixResult {
  entries: MatrixEntry[];
  ok: boolean;
  seconds: number;
}

/** The pairs the matrix checks. */
export function matrixPairs(lab: Lab): Array<[LabPod, LabPod]> {
  const firstPods = lab.nodes
    .map((n) => lab.pods.find((p) => p.node === n.name))
    .filter((p): p is LabPod => p !== undefined && p.ips.length > 0);
  const pairs: Array<[LabPod, LabPod]> = [];
  for (const a of firstPods) for (const b of firstPods) if (a !== b) pairs.push([a, b]);
  for (const node of lab.nodes) {
    const onNode = lab.pods.filter((p) => p.node === node.name && p.ips.length > 0);
    if (onNode.length >= 2) pairs.push([onNode[0]!, onNode[1]!]);
  }
  return pairs;
}

async function limit<T, R>(items: T[], concurrency: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}

/**
 * Pings every pair until the first reply or `timeoutMs` (connections are made on demand,
 * so the first packets of a pair may wait for a relayed or punched connection).
 */
export async function runMatrix(
  lab: Lab,
  opts: { timeoutMs?: number; concurrency?: number; families?: Array<4 | 6>; settleMs?: number } = {},
): Promise<MatrixResult> {
  const started = Date.now();
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const families = opts.families ?? (lab.topology.dualStack ? [4, 6] : [4]);
  const siteOf = new Map(lab.nodes.map((n) => [n.name, n.site]));
  const pairs = families.flatMap((family) => matrixPairs(lab).map(([a, b]) => ({ a, b, family })));
  const measured = await limit(pairs, opts.concurrency ?? 16, async ({ a, b, family }) => {
    const target = b.ips.find((ip) => (family === 6 ? ip.includes(':') : !ip.includes(':')));
    const t0 = Date.now();
    let rtt: number | null = null;
    if (target) {
      while (rtt === null && Date.now() - t0 < timeoutMs) rtt = await pingFrom(a.netns, target, 1);
    }
    const seconds = rtt === null ? null : (Date.now() - t0) / 1000;
    // The first reply waited for an on-demand connection; the RTT shown is the next one's.
    if (rtt !== null && target) rtt = (await pingFrom(a.netns, target, 2)) ?? rtt;
    return { a, b, target: target ?? '', rtt, seconds };
  });
  // Paths after the traffic: on-demand connections exist now, and a pair that started
  // relayed may be moving to a punched path. Wait until no path changed for 1.5 s (at most
  // settleMs), so the matrix shows where traffic settles, not a moment of the handover.
  const statuses = await settledStatuses(lab, opts.settleMs ?? 8000);
  const entries = measured.map(({ a, b, target, rtt, seconds }) => {
    const path: MatrixEntry['path'] =
      a.node === b.node ? 'local' : (statuses.get(a.node)?.peers.find((p) => p.node === b.node)?.path ?? 'unknown');
    return {
      from: a.name,
      to: b.name,
      fromNode: a.node,
      toNode: b.node,
      fromSite: siteOf.get(a.node) ?? '?',
      toSite: siteOf.get(b.node) ?? '?',
      target,
      ok: rtt !== null,
      rttMs: rtt,
      path,
      secondsToFirstReply: seconds,
    };
  });
  return { entries, ok: entries.length > 0 && entries.every((e) => e.ok), seconds: (Date.now() - started) / 1000 };
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

type StatusMap = Map<string, AgentStatus | undefined>;

async function settledStatuses(lab: Lab, settleMs: number): Promise<StatusMap> {
  const read = async (): Promise<StatusMap> => {
    const m: StatusMap = new Map();
    for (const node of lab.nodes) m.set(node.name, await lab.agentStatus(node.name).catch(() => undefined));
    return m;
  };
  const key = (m: StatusMap) =>
    [...m].map(([n, s]) => `${n}:${(s?.peers ?? []).map((p) => `${p.node}=${p.path}`).join(',')}`).join(';');
  const deadline = Date.now() + settleMs;
  let last = await read();
  let stableSince = Date.now();
  while (Date.now() < deadline && Date.now() - stableSince < 1500) {
    await new Promise((r) => setTimeout(r, 300));
    const next = await read();
    if (key(next) !== key(last)) stableSince = Date.now();
    last = next;
  }
  return last;
}

/** The matrix as a table a human reads, plus one summary line per site pair. */
export function formatMatrix(result: MatrixResult): string {
  const rows = [['FROM', 'TO', 'SITES', 'DST IP', 'RESULT', 'FIRST REPLY', 'RTT', 'PATH']];
  for (const e of result.entries) {
    rows.push([
      e.from,
      e.to,
      `${e.fromSite}→${e.toSite}`,
      e.target,
      e.ok ? 'ok' : 'FAIL',
      e.secondsToFirstReply === null ? '-' : `${e.secondsToFirstReply.toFixed(1)} s`,
      e.rttMs === null ? '-' : `${e.rttMs < 10 ? e.rttMs.toFixed(2) : e.rttMs.toFixed(1)} ms`,
      e.path,
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)) + 2);
  const lines = rows.map((r) =>
    r
      .map((cell, c) => pad(cell, widths[c]!))
      .join('')
      .trimEnd(),
  );
  const bySites = new Map<string, MatrixEntry[]>();
  for (const e of result.entries) {
    const key = [e.fromSite, e.toSite].sort().join(' ↔ ');
    bySites.set(key, [...(bySites.get(key) ?? []), e]);
  }
  lines.push('');
  for (const [key, list] of bySites) {
    const paths = [...new Set(list.map((e) => e.path))].join(', ');
    lines.push(`${pad(key, 22)} ${list.filter((e) => e.ok).length}/${list.length} reachable  (${paths})`);
  }
  const failed = result.entries.filter((e) => !e.ok).length;
  lines.push(
    failed === 0
      ? `all ${result.entries.length} pod pairs reachable by Pod IP (${result.seconds.toFixed(1)} s)`
      : `${failed} of ${result.entries.length} pod pairs UNREACHABLE (${result.seconds.toFixed(1)} s)`,
  );
  return lines.join('\n');
}
