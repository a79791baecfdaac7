// Prometheus metrics of one agent. Per-peer traffic, drops, paths and hole-punch results
// live in the dataplane and the overlay as plain counters; they are read at scrape time
// (collect callbacks), so the hot path pays nothing for metrics. CNI latencies are observed
// as they happen.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { NatKind } from '../overlay/nat-kind.ts';
import type { ReflectionCounters } from '../overlay/reflection.ts';
import type { PeerStatus } from './status.ts';

export interface HolePunchCounts {
  attempts: number;
  /** result → count, e.g. { success: 3, timeout: 1, 'connect-refused': 2 }. */
  results: Record<string, number>;
}

export interface IpamUsage {
  cidr: string;
  used: number;
  capacity: number;
}

/** Where the metrics read their values at scrape time. */
export interface MetricsSources {
  /** The status lines of the peers with a path or with packets or drops counted (agent.peerSamples). */
  peers(): PeerStatus[];
  /** Dataplane drops by reason (forwarder + TUN). */
  drops(): Record<string, number>;
  holePunch(): HolePunchCounts;
  ipam(): IpamUsage[];
  /** Nodes whose edgemesh annotations were refused (invalid, conflicting), now. */
  refusedNodes(): number;
  /** Exceptions caught in Node event handlers (each skipped one event). */
  nodeEventErrors(): number;
  /** Pod CIDRs peers claim that the cluster does not back (not routed), now. */
  refusedPodCidrs?(): number;
  /** Peer IDs published by more than one Node (none of them trusted), now. */
  peerIdConflicts?(): number;
  /** Path changes and the UDP side of the path ladder (absent before the overlay is up). */
  paths?(): PathCounts;
  /** The CNI plugin's netlink helper: processes started, failed, operations redone with iproute2. */
  cniPlumbing?(): { helperStarts: number; helperFailures: number; iproute2Fallbacks: number };
  /** A relay node's UDP relay (absent elsewhere). */
  udpRelay?(): UdpRelayCounts | undefined;
  /** The relayed stream's TCP splice: this node as a member, and as a relay when it runs one. */
  splice?(): SpliceCounts | undefined;
}

export interface SpliceCounts {
  /** Splices this member set up (as requester or as the offered peer), and failures by reason. */
  member: Record<string, number>;
  /** Relay nodes only: splice requests by result (granted or the refusal reason). */
  requests?: Record<string, number>;
  /** Relay nodes only: sockets closed without a splice, by reason (bad-token, address-mismatch, ...). */
  refusedSockets?: Record<string, number>;
  /** Relay nodes only: bytes piped in both directions, splices active now, pairs waiting for their sockets. */
  pipedBytes?: number;
  active?: number;
  pending?: number;
}

export interface UdpRelayCounts {
  forwardedDatagrams: number;
  forwardedBytes: number;
  bindings: number;
  /** Datagrams the relay dropped, by reason (unknown-source, half-open, rate-limited, ...). */
  drops: Record<string, number>;
  /** Binding requests: granted, or refused by reason. */
  requests: Record<string, number>;
}

export interface PathCounts {
  /** Visible path changes over all peers (e.g. relayed → udp-punched). */
  changes: number;
  /** Traffic moved between a UDP session and the stream tunnel. */
  udpSwitches: number;
  /** UDP session handshakes that produced no session, by reason. */
  udpHandshakeFailures: Record<string, number>;
  /** UDP control messages that were authentic but made no sense. */
  udpBadControl: number;
  /** Probe bursts towards peers without a working UDP path, and how they ended. */
  udpAttempts?: number;
  udpResults?: Record<string, number>;
  /** Binding requests and answers, both roles (overlay/reflection.ts). */
  reflection?: ReflectionCounters | undefined;
  /** Birthday punching through an endpoint-dependent NAT (overlay/birthday-punch.ts). */
  birthday?: Record<string, number> | undefined;
  /** This node's NAT kind (undefined without a UDP socket). */
  natKind?: NatKind | undefined;
}

/**
 * `read` once per scrape. prom-client starts every collector in one synchronous pass (the
 * registry maps its metrics to promises, and each metric's collect runs before its first
 * await), so a value kept until the next microtask is shared by that pass and no other.
 * The agent's status and path counters walk every peer: with 5,000 Nodes, building them for
 * each collector that reads them (7 and 12 times a scrape) grew an agent by 50 MiB RSS at
 * its first scrape (`node bench/agent-memory.ts`).
 */
function oncePerScrape<T>(read: () => T): () => T {
  let kept: { value: T } | undefined;
  return () => {
    if (kept === undefined) {
      kept = { value: read() };
      queueMicrotask(() => {
        kept = undefined;
      });
    }
    return kept.value;
  };
}

/** A Counter whose value is owned elsewhere: each scrape sets it to the source's total. */
function mirroredCounter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Array<[Partial<Record<L, string>>, number]>,
): Counter<L> {
  return new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) if (value > 0) this.inc(labels, value);
    },
  });
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly cniLatency: Histogram<'operation' | 'result'>;
  private sources: MetricsSources | undefined;
  readonly unhandledRejections: Counter;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'edgemesh_' });
    const peers = oncePerScrape(() => this.sources?.peers() ?? []);
    const paths = oncePerScrape(() => this.sources?.paths?.());
    const perPeer = (field: 'txBytes' | 'rxBytes' | 'txPackets' | 'rxPackets') => () =>
      peers().map((p): [Partial<Record<'peer', string>>, number] => [{ peer: p.node }, p[field]]);
    mirroredCounter(
      this.registry,
      'edgemesh_peer_tx_bytes_total',
      'Bytes sent to a peer node',
      ['peer'],
      perPeer('txBytes'),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_peer_rx_bytes_total',
      'Bytes received from a peer node',
      ['peer'],
      perPeer('rxBytes'),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_peer_tx_packets_total',
      'Packets sent to a peer node (a GSO super-packet counts once)',
      ['peer'],
      perPeer('txPackets'),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_peer_rx_packets_total',
      'Packets received from a peer node',
      ['peer'],
      perPeer('rxPackets'),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_peer_drops_total',
      'Packets to or from a peer node dropped',
      ['peer'],
      () => peers().map((p): [Partial<Record<'peer', string>>, number] => [{ peer: p.node }, p.drops]),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_dataplane_drops_total',
      'Packets dropped by the dataplane, by reason',
      ['reason'],
      () =>
        Object.entries(this.sources?.drops() ?? {}).map(([reason, n]): [Partial<Record<'reason', string>>, number] => [
          { reason },
          n,
        ]),
    );
    mirroredCounter(this.registry, 'edgemesh_holepunch_attempts_total', 'Hole punch attempts', [], () => [
      [{}, this.sources?.holePunch().attempts ?? 0],
    ]);
    mirroredCounter(
      this.registry,
      'edgemesh_holepunch_results_total',
      'Hole punch outcomes, by result',
      ['result'],
      () =>
        Object.entries(this.sources?.holePunch().results ?? {}).map(
          ([result, n]): [Partial<Record<'result', string>>, number] => [{ result }, n],
        ),
    );
    mirroredCounter(this.registry, 'edgemesh_path_changes_total', 'Peer path changes (any kind)', [], () => [
      [{}, paths()?.changes ?? 0],
    ]);
    mirroredCounter(
      this.registry,
      'edgemesh_udp_carrier_switches_total',
      'Times peer traffic moved between a UDP session and the stream tunnel',
      [],
      () => [[{}, paths()?.udpSwitches ?? 0]],
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_handshake_failures_total',
      'UDP session handshakes that produced no session, by reason',
      ['reason'],
      () =>
        Object.entries(paths()?.udpHandshakeFailures ?? {}).map(
          ([reason, n]): [Partial<Record<'reason', string>>, number] => [{ reason }, n],
        ),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_bad_control_total',
      'Authentic UDP control messages that made no sense (unknown session, bad content, unsolicited reply)',
      [],
      () => [[{}, paths()?.udpBadControl ?? 0]],
    );
    const relay = () => this.sources?.udpRelay?.();
    mirroredCounter(
      this.registry,
      'edgemesh_udp_relay_forwarded_datagrams_total',
      'Sealed datagrams this relay node forwarded between members (never opened)',
      [],
      () => [[{}, relay()?.forwardedDatagrams ?? 0]],
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_relay_forwarded_bytes_total',
      'Bytes this relay node forwarded between members',
      [],
      () => [[{}, relay()?.forwardedBytes ?? 0]],
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_relay_drops_total',
      'Datagrams the UDP relay dropped, by reason',
      ['reason'],
      () =>
        Object.entries(relay()?.drops ?? {}).map(([reason, n]): [Partial<Record<'reason', string>>, number] => [
          { reason },
          n,
        ]),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_relay_binding_requests_total',
      'UDP relay binding requests from members, by result (granted or the refusal reason)',
      ['result'],
      () =>
        Object.entries(relay()?.requests ?? {}).map(([result, n]): [Partial<Record<'result', string>>, number] => [
          { result },
          n,
        ]),
    );
    new Gauge({
      name: 'edgemesh_udp_relay_bindings',
      help: 'Bindings the UDP relay holds now',
      registers: [this.registry],
      collect() {
        this.set(relay()?.bindings ?? 0);
      },
    });
    const splice = () => this.sources?.splice?.();
    const byLabel =
      <L extends string>(label: L, counts: () => Record<string, number> | undefined) =>
      () =>
        Object.entries(counts() ?? {}).map(([k, n]): [Partial<Record<L, string>>, number] => [
          { [label]: k } as Partial<Record<L, string>>,
          n,
        ]);
    mirroredCounter(
      this.registry,
      'edgemesh_splice_member_total',
      'Relayed stream splices this node set up (established, accepted) or failed to, by result',
      ['result'],
      byLabel('result', () => splice()?.member),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_splice_relay_requests_total',
      'Splice requests this relay node answered, by result (granted or the refusal reason)',
      ['result'],
      byLabel('result', () => splice()?.requests),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_splice_relay_refused_sockets_total',
      'TCP sockets the splice relay closed without a splice, by reason (bad-token, address-mismatch, ...)',
      ['reason'],
      byLabel('reason', () => splice()?.refusedSockets),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_splice_relay_piped_bytes_total',
      'Bytes this relay node piped between spliced members (ciphertext, both directions)',
      [],
      () => [[{}, splice()?.pipedBytes ?? 0]],
    );
    new Gauge({
      name: 'edgemesh_splice_relay_splices',
      help: 'Splices this relay node holds now, by state (active: piping; pending: waiting for sockets)',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const s = splice();
        this.set({ state: 'active' }, s?.active ?? 0);
        this.set({ state: 'pending' }, s?.pending ?? 0);
      },
    });
    const plumbing = () => this.sources?.cniPlumbing?.();
    mirroredCounter(
      this.registry,
      'edgemesh_cni_netlink_helper_starts_total',
      'Netlink helper processes the CNI plugin started (more than one: it died and was restarted)',
      [],
      () => [[{}, plumbing()?.helperStarts ?? 0]],
    );
    mirroredCounter(
      this.registry,
      'edgemesh_cni_netlink_helper_failures_total',
      'Netlink helper processes that died or hung',
      [],
      () => [[{}, plumbing()?.helperFailures ?? 0]],
    );
    mirroredCounter(
      this.registry,
      'edgemesh_cni_iproute2_fallbacks_total',
      'Per-pod interface operations done with ip/nsenter because the netlink helper had failed',
      [],
      () => [[{}, plumbing()?.iproute2Fallbacks ?? 0]],
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_punch_attempts_total',
      'Probe bursts towards a peer without a working UDP path (new session or path lost)',
      [],
      () => [[{}, paths()?.udpAttempts ?? 0]],
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_punch_results_total',
      'How UDP probe bursts ended: success (a direct path), relayed (a path through a UDP relay only), or the failure reason',
      ['result'],
      () =>
        Object.entries(paths()?.udpResults ?? {}).map(([result, n]): [Partial<Record<'result', string>>, number] => [
          { result },
          n,
        ]),
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_reflection_total',
      'Binding requests and answers (reflection), by event: requests-sent, answers (ours), answered, rate-limited, refused-not-public (as a reflector), bad, mapping-changes',
      ['event'],
      () => {
        const r = paths()?.reflection;
        if (r === undefined) return [];
        const events: Record<string, number> = {
          'requests-sent': r.requestsSent,
          answers: r.answers,
          answered: r.answered,
          'rate-limited': r.rateLimited,
          'refused-not-public': r.refusedNotPublic,
          bad: r.bad,
          'mapping-changes': r.mappingChanges,
        };
        return Object.entries(events).map(([event, n]): [Partial<Record<'event', string>>, number] => [{ event }, n]);
      },
    );
    mirroredCounter(
      this.registry,
      'edgemesh_udp_birthday_total',
      "Birthday punching through an endpoint-dependent NAT, by event: attempts-hard, attempts-easy, probes-sent, rate-limited (held back at least once), sockets-opened, socket-errors, hits, unanswered, superseded (by a new session), both-hard (sessions left to the relay, no probes), unvouched (no relay vouched for the peer's public IP: no spray)",
      ['event'],
      () =>
        Object.entries(paths()?.birthday ?? {}).map(([event, n]): [Partial<Record<'event', string>>, number] => [
          { event },
          n,
        ]),
    );
    new Gauge({
      name: 'edgemesh_nat_kind',
      help: "This node's NAT as reflectors see it (1 for the current kind): none, endpoint-independent, endpoint-dependent, unknown",
      labelNames: ['kind'],
      registers: [this.registry],
      collect() {
        this.reset();
        const kind = paths()?.natKind;
        if (kind !== undefined) this.set({ kind }, 1);
      },
    });
    new Gauge({
      name: 'edgemesh_peer_time_to_direct_seconds',
      help: 'Time from the first UDP session with a peer to its first working UDP path',
      labelNames: ['peer'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of peers()) if (p.msToDirect !== undefined) this.set({ peer: p.node }, p.msToDirect / 1000);
      },
    });
    new Gauge({
      name: 'edgemesh_peer_path',
      help: 'The path traffic to a peer node takes (1 for the current path)',
      labelNames: ['peer', 'path'],
      registers: [this.registry],
      collect() {
        this.reset();
        // A peer with no path (no traffic yet: tunnels open on demand) has no series, as a counter at 0 has none.
        for (const p of peers()) if (p.path !== 'none') this.set({ peer: p.node, path: p.path }, 1);
      },
    });
    new Gauge({
      name: 'edgemesh_peer_rtt_seconds',
      help: 'Last measured round-trip time to a peer node over its tunnel',
      labelNames: ['peer'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of peers()) if (p.rttMs !== null) this.set({ peer: p.node }, p.rttMs / 1000);
      },
    });
    const ipam = () => this.sources?.ipam() ?? [];
    const refused = () => this.sources?.refusedNodes() ?? 0;
    new Gauge({
      name: 'edgemesh_ipam_addresses_used',
      help: 'Pod addresses leased in a node block',
      labelNames: ['cidr'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const u of ipam()) this.set({ cidr: u.cidr }, u.used);
      },
    });
    new Gauge({
      name: 'edgemesh_ipam_addresses_capacity',
      help: 'Pod addresses a node block can lease (gateway excluded)',
      labelNames: ['cidr'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const u of ipam()) this.set({ cidr: u.cidr }, u.capacity);
      },
    });
    new Gauge({
      name: 'edgemesh_nodes_refused',
      help: 'Nodes whose edgemesh annotations this agent refuses (see the agent log or status for why)',
      registers: [this.registry],
      collect() {
        this.set(refused());
      },
    });
    const refusedCidrs = () => this.sources?.refusedPodCidrs?.() ?? 0;
    new Gauge({
      name: 'edgemesh_pod_cidrs_refused',
      help: 'Pod CIDRs peers announce that no IPAMBlock or spec.podCIDRs backs, that lie outside the cluster CIDRs or overlap another node (not routed)',
      registers: [this.registry],
      collect() {
        this.set(refusedCidrs());
      },
    });
    const conflicts = () => this.sources?.peerIdConflicts?.() ?? 0;
    new Gauge({
      name: 'edgemesh_peer_id_conflicts',
      help: 'libp2p peer IDs published by more than one Node (none of those Nodes is trusted)',
      registers: [this.registry],
      collect() {
        this.set(conflicts());
      },
    });
    mirroredCounter(
      this.registry,
      'edgemesh_node_event_errors_total',
      'Node events whose handling failed (logged and skipped, never fatal)',
      [],
      () => [[{}, this.sources?.nodeEventErrors() ?? 0]],
    );
    this.unhandledRejections = new Counter({
      name: 'edgemesh_unhandled_rejections_total',
      help: 'Promise rejections nothing handled (logged; a bug to report)',
      registers: [this.registry],
    });
    new Gauge({
      name: 'edgemesh_ready',
      help: '1 when the node is set up and the CNI socket serves',
      registers: [this.registry],
      collect: () => undefined,
    });
    this.cniLatency = new Histogram({
      name: 'edgemesh_cni_operation_duration_seconds',
      help: 'Time the agent took to serve a CNI operation',
      labelNames: ['operation', 'result'],
      // Pod start-up is felt from a few milliseconds: fine buckets at the low end.
      buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers: [this.registry],
    });
  }

  /** Wires the scrape-time sources once the agent's parts exist. */
  attach(sources: MetricsSources): void {
    this.sources = sources;
  }

  observeCni(operation: string, seconds: number, ok: boolean): void {
    this.cniLatency.observe({ operation, result: ok ? 'ok' : 'error' }, seconds);
  }

  setReady(ready: boolean): void {
    (this.registry.getSingleMetric('edgemesh_ready') as Gauge).set(ready ? 1 : 0);
  }
}
