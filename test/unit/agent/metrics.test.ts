import { describe, expect, it } from 'vitest';
import { startHttpServer } from '../../../agent/http.ts';
import { AgentMetrics } from '../../../agent/metrics.ts';
import type { AgentStatus } from '../../../agent/status.ts';

function statusWith(tx: number): AgentStatus {
  return {
    node: 'n1',
    site: 'a',
    peerId: 'p',
    podCidrs: [],
    ready: true,
    peers: [
      {
        node: 'edge-b-1',
        site: 'b',
        podCidrs: ['10.244.2.0/24'],
        path: 'hole-punched',
        rttMs: 25,
        txBytes: tx,
        rxBytes: 2000,
        txPackets: 10,
        rxPackets: 20,
        drops: 1,
        lastSeen: null,
        msToDirect: 1500,
      },
      {
        node: 'edge-c-1',
        site: 'c',
        podCidrs: ['10.244.3.0/24'],
        path: 'none',
        rttMs: null,
        txBytes: 0,
        rxBytes: 0,
        txPackets: 0,
        rxPackets: 0,
        drops: 0,
        lastSeen: null,
      },
    ],
  };
}

describe('agent metrics', () => {
  it('mirrors the per-peer counters, path, RTT, drops, hole punches and IPAM usage at scrape time', async () => {
    const metrics = new AgentMetrics();
    let tx = 1000;
    const reads = { peers: 0, paths: 0 };
    metrics.attach({
      peers: () => {
        reads.peers++;
        return statusWith(tx).peers;
      },
      drops: () => ({ 'spoofed-source': 3, 'no-route': 0 }),
      holePunch: () => ({ attempts: 4, results: { success: 3, timeout: 1 } }),
      ipam: () => [{ cidr: '10.244.1.0/24', used: 5, capacity: 253 }],
      refusedNodes: () => 2,
      nodeEventErrors: () => 1,
      paths: () => ({
        ...{ read: reads.paths++ },
        changes: 2,
        udpSwitches: 1,
        udpHandshakeFailures: {},
        udpBadControl: 0,
        udpAttempts: 3,
        udpResults: { success: 2, unanswered: 1 },
        reflection: {
          requestsSent: 6,
          answers: 2,
          rounds: 1,
          mappingChanges: 1,
          answered: 0,
          rateLimited: 0,
          refusedNotPublic: 0,
          bad: 0,
        },
        natKind: 'endpoint-independent',
      }),
    });
    metrics.observeCni('ADD', 0.004, true);
    metrics.setReady(true);
    let text = await metrics.registry.metrics();
    expect(text).toContain('edgemesh_peer_tx_bytes_total{peer="edge-b-1"} 1000');
    expect(text).toContain('edgemesh_peer_rx_packets_total{peer="edge-b-1"} 20');
    expect(text).toContain('edgemesh_peer_path{peer="edge-b-1",path="hole-punched"} 1');
    expect(text).toContain('edgemesh_peer_rtt_seconds{peer="edge-b-1"} 0.025');
    expect(text).toContain('edgemesh_dataplane_drops_total{reason="spoofed-source"} 3');
    expect(text).toContain('edgemesh_holepunch_attempts_total 4');
    expect(text).toContain('edgemesh_holepunch_results_total{result="timeout"} 1');
    expect(text).toContain('edgemesh_ipam_addresses_used{cidr="10.244.1.0/24"} 5');
    expect(text).toContain('edgemesh_cni_operation_duration_seconds_bucket{le="0.005",operation="ADD",result="ok"} 1');
    expect(text).toContain('edgemesh_ready 1');
    expect(text).toContain('edgemesh_nat_kind{kind="endpoint-independent"} 1');
    expect(text).toContain('edgemesh_peer_time_to_direct_seconds{peer="edge-b-1"} 1.5');
    expect(text).toContain('edgemesh_udp_punch_attempts_total 3');
    expect(text).toContain('edgemesh_udp_punch_results_total{result="unanswered"} 1');
    expect(text).toContain('edgemesh_udp_reflection_total{event="answers"} 2');
    expect(text).toContain('edgemesh_nodes_refused 2');
    expect(text).toContain('edgemesh_node_event_errors_total 1');
    expect(text).toContain('edgemesh_unhandled_rejections_total 0');
    expect(text).toContain('# TYPE edgemesh_peer_tx_bytes_total counter');
    // The status and the path counters walk every peer: built once a scrape, not once a collector.
    expect(reads).toEqual({ peers: 1, paths: 1 });
    // A peer without a path or traffic has no series.
    expect(text).not.toContain('edge-c-1');
    // Counters follow their source on the next scrape, without double counting.
    tx = 5000;
    text = await metrics.registry.metrics();
    expect(text).toContain('edgemesh_peer_tx_bytes_total{peer="edge-b-1"} 5000');
    expect(reads).toEqual({ peers: 2, paths: 2 });
  });

  it("mirrors the relay TCP splice's counters (member and relay side)", async () => {
    const metrics = new AgentMetrics();
    metrics.attach({
      peers: () => statusWith(0).peers,
      drops: () => ({}),
      holePunch: () => ({ attempts: 0, results: {} }),
      ipam: () => [],
      refusedNodes: () => 0,
      nodeEventErrors: () => 0,
      splice: () => ({
        member: { established: 2, accepted: 1, 'connect-failed': 1 },
        requests: { granted: 3, 'unknown-peer': 1 },
        refusedSockets: { 'bad-token': 4 },
        pipedBytes: 123_456,
        active: 2,
        pending: 1,
      }),
    });
    const text = await metrics.registry.metrics();
    expect(text).toContain('edgemesh_splice_member_total{result="established"} 2');
    expect(text).toContain('edgemesh_splice_member_total{result="connect-failed"} 1');
    expect(text).toContain('edgemesh_splice_relay_requests_total{result="unknown-peer"} 1');
    expect(text).toContain('edgemesh_splice_relay_refused_sockets_total{reason="bad-token"} 4');
    expect(text).toContain('edgemesh_splice_relay_piped_bytes_total 123456');
    expect(text).toContain('edgemesh_splice_relay_splices{state="active"} 2');
    expect(text).toContain('edgemesh_splice_relay_splices{state="pending"} 1');
  });

  it('serves /metrics, /healthz and /readyz over HTTP', async () => {
    const metrics = new AgentMetrics();
    let ready = false;
    const server = await startHttpServer('127.0.0.1:0', {
      registry: metrics.registry,
      unhealthy: () => null,
      notReady: () => (ready ? null : 'waiting for node blocks'),
    });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      const notReady = await fetch(`${base}/readyz`);
      expect(notReady.status).toBe(503);
      expect(await notReady.text()).toContain('waiting for node blocks');
      ready = true;
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      const m = await fetch(`${base}/metrics`);
      expect(m.headers.get('content-type')).toContain('text/plain');
      expect(await m.text()).toContain('edgemesh_process_cpu_seconds_total');
      expect((await fetch(`${base}/nope`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
