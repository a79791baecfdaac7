import { describe, expect, it } from 'vitest';
import { type AgentStatus, formatStatus } from '../../../agent/status.ts';

const now = Date.parse('2026-01-01T12:00:00Z');
const status: AgentStatus = {
  node: 'edge-a-1',
  site: 'edge-a',
  peerId: '12D3KooWtest',
  podCidrs: ['10.244.1.0/24'],
  ready: true,
  natKind: 'endpoint-independent',
  peers: [
    {
      node: 'edge-b-1',
      site: 'edge-b',
      podCidrs: ['10.244.2.0/24'],
      path: 'relayed',
      rttMs: 12.345,
      txBytes: 3 * 1024 * 1024,
      rxBytes: 512,
      txPackets: 40,
      rxPackets: 7,
      drops: 2,
      lastSeen: '2026-01-01T11:59:55Z',
      endpoint: 'udp://203.0.113.102:24001',
      msToDirect: 1234,
      pathSince: '2026-01-01T11:57:00Z',
    },
    {
      node: 'edge-a-2',
      site: 'edge-a',
      podCidrs: ['10.244.3.0/24'],
      path: 'host-gw',
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

describe('formatStatus', () => {
  it('prints the node header and one aligned row per peer, sorted by node', () => {
    const text = formatStatus(status, now);
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toBe('node: edge-a-1  site: edge-a  ready  NAT: endpoint-independent');
    expect(lines[2]).toBe('pod CIDRs: 10.244.1.0/24');
    const header = lines[4]!;
    expect(header).toMatch(
      /^NODE\s+SITE\s+POD CIDRS\s+PATH\s+SINCE\s+ENDPOINT\s+TO DIRECT\s+RTT\s+TX\s+RX\s+DROPS\s+LAST SEEN$/,
    );
    expect(lines[5]).toMatch(/^edge-a-2\s+edge-a\s+10\.244\.3\.0\/24\s+host-gw\s+-\s+-\s+-\s+-\s+0 B \(0 pkts\)/);
    expect(lines[5]).toMatch(/never$/);
    expect(lines[6]).toMatch(
      /^edge-b-1\s+edge-b\s+10\.244\.2\.0\/24\s+relayed\s+3m ago\s+udp:\/\/203\.0\.113\.102:24001\s+1\.23s\s+12\.3ms\s+3\.0 MiB \(40 pkts\)\s+512 B/,
    );
    expect(lines[6]).toMatch(/\s2\s+5s ago$/);
    // Columns line up: PATH starts at the same offset in every row.
    const col = header.indexOf('PATH');
    expect(lines[5]!.slice(col, col + 7)).toBe('host-gw');
    expect(lines[6]!.slice(col, col + 7)).toBe('relayed');
  });

  it('says when the agent is not ready or has no peers', () => {
    const text = formatStatus({ ...status, ready: false, peers: [] }, now);
    expect(text).toContain('NOT READY');
    expect(text).toContain('no peers');
  });
});

describe('formatStatus: refused claims', () => {
  it('lists refused Nodes and refused pod CIDRs with their reasons', () => {
    const text = formatStatus(
      {
        ...status,
        peers: [
          { ...status.peers[0]!, refusedCidrs: [{ cidr: '10.244.3.0/24', reason: 'outside the cluster CIDRs' }] },
        ],
        refusedNodes: [{ node: 'edge-c-9', reason: 'peer ID X is published by nodes a, b: trusting none of them' }],
      },
      now,
    );
    expect(text).toContain('refused:\n  edge-c-9: peer ID X is published by nodes a, b');
    expect(text).toContain('  edge-b-1: pod CIDR 10.244.3.0/24 outside the cluster CIDRs');
  });
});
