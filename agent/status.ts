// The agent's status as the control API serves it (`GET /status`) and as
// `edgemesh-cni status` prints it: one row per peer node, in the spirit of `wg show`.
// The one contract for everything that reads an agent's status: the CLI, the metrics, the
// lab (lab/lab.ts, lab/matrix.ts, lab/time-to-direct.ts), the benchmarks and the tests.

import type { PathKind } from '../overlay/path-kind.ts';

export type { PathKind };

export interface PeerStatus {
  node: string;
  site: string | null;
  /** The pod CIDRs routed to this peer: those the cluster backs (IPAMBlock / spec.podCIDRs). */
  podCidrs: string[];
  /** Pod CIDRs the peer announces but that are not routed, with why. */
  refusedCidrs?: Array<{ cidr: string; reason: string }>;
  path: PathKind;
  /** ISO time the agent took the current path (absent: not known, e.g. no tunnel yet). */
  pathSince?: string;
  rttMs: number | null;
  txBytes: number;
  rxBytes: number;
  txPackets: number;
  rxPackets: number;
  drops: number;
  /** ISO time of the last packet or pong from the peer; null if never. */
  lastSeen: string | null;
  /** What carries the traffic now: the UDP session's ip:port, or the stream's remote multiaddr. */
  endpoint?: string;
  /** Milliseconds from the first UDP session with the peer to its first working UDP path. */
  msToDirect?: number;
}

export interface AgentStatus {
  node: string;
  site: string;
  peerId: string;
  podCidrs: string[];
  ready: boolean;
  /** This node's NAT as reflectors see it: none (public), endpoint-independent, endpoint-dependent, unknown. */
  natKind?: string;
  peers: PeerStatus[];
  /** Nodes whose edgemesh annotations are refused altogether (invalid, peer-ID conflict), with why. */
  refusedNodes?: Array<{ node: string; reason: string }>;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

function ago(iso: string | null, now: number): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The human-readable status: a header about this node, then the peer table. */
export function formatStatus(status: AgentStatus, now = Date.now()): string {
  const head = [
    `node: ${status.node}  site: ${status.site}  ${status.ready ? 'ready' : 'NOT READY'}` +
      (status.natKind === undefined ? '' : `  NAT: ${status.natKind}`),
    `peer id: ${status.peerId}`,
    `pod CIDRs: ${status.podCidrs.join(', ') || '(none)'}`,
  ];
  const refused = [
    ...(status.refusedNodes ?? []).map((r) => `  ${r.node}: ${r.reason}`),
    ...status.peers.flatMap((p) => (p.refusedCidrs ?? []).map((r) => `  ${p.node}: pod CIDR ${r.cidr} ${r.reason}`)),
  ];
  const tail = refused.length > 0 ? `\nrefused:\n${refused.join('\n')}\n` : '';
  if (status.peers.length === 0) return `${head.join('\n')}\n\nno peers\n${tail}`;
  const rows = [
    ['NODE', 'SITE', 'POD CIDRS', 'PATH', 'SINCE', 'ENDPOINT', 'TO DIRECT', 'RTT', 'TX', 'RX', 'DROPS', 'LAST SEEN'],
    ...[...status.peers]
      .sort((a, b) => a.node.localeCompare(b.node))
      .map((p) => [
        p.node,
        p.site ?? '-',
        p.podCidrs.join(',') || '-',
        p.path,
        p.pathSince === undefined ? '-' : ago(p.pathSince, now),
        p.endpoint ?? '-',
        p.msToDirect === undefined ? '-' : `${(p.msToDirect / 1000).toFixed(2)}s`,
        p.rttMs === null ? '-' : `${p.rttMs.toFixed(1)}ms`,
        `${bytes(p.txBytes)} (${p.txPackets} pkts)`,
        `${bytes(p.rxBytes)} (${p.rxPackets} pkts)`,
        String(p.drops),
        ago(p.lastSeen, now),
      ]),
  ];
  return `${head.join('\n')}\n\n${table(rows)}\n${tail}`;
}
