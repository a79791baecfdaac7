import { describe, expect, it } from 'vitest';
import { PodCidrAuthority } from '../../../agent/pod-cidr-authority.ts';
import { blockObjectName } from '../../../ipam/node-blocks.ts';

const block = (cidr: string, node: unknown, name = blockObjectName(cidr)) => ({
  metadata: { name },
  spec: { cidr, node },
});

describe('PodCidrAuthority', () => {
  it('backs a claim only with an assignment to that node, inside the cluster CIDRs, overlapping nobody', () => {
    const a = new PodCidrAuthority(['10.244.0.0/16', 'fd00:10:244::/56']);
    a.setBlock(block('10.244.1.0/24', 'n1'));
    a.setBlock(block('fd00:10:244:1::/80', 'n1'));
    a.setNodePodCidrs('n2', ['10.244.2.0/24']);
    expect(a.verify('n1', ['10.244.1.0/24', 'fd00:10:244:1::/80'])).toEqual({
      accepted: ['10.244.1.0/24', 'fd00:10:244:1::/80'],
      refused: [],
    });
    expect(a.verify('n2', ['10.244.2.0/24']).accepted).toEqual(['10.244.2.0/24']);
    const v = a.verify('n1', ['10.244.2.0/24', '10.244.1.0/25', '10.245.0.0/24', '::/0']);
    expect(v.accepted).toEqual([]);
    expect(v.refused.map((r) => r.reason)).toEqual([
      'no IPAMBlock or spec.podCIDRs assigns it to node n1',
      'no IPAMBlock or spec.podCIDRs assigns it to node n1',
      'outside the cluster CIDRs',
      'outside the cluster CIDRs',
    ]);
  });

  it('ignores malformed blocks and blocks whose name does not encode their CIDR', () => {
    const a = new PodCidrAuthority(['10.244.0.0/16']);
    a.setBlock(block('10.244.1.0/24', 'n1', 'v4-10-244-9-0-24'));
    a.setBlock(block('10.244.1.7/24', 'n1'));
    a.setBlock(block('10.244.3.0/24', 42));
    a.setBlock({ metadata: { name: 'x' }, spec: { cidr: ['10.244.4.0/24'] } });
    a.setBlock({});
    expect(a.assigned('n1')).toEqual([]);
    expect([...a.badBlocks.keys()].sort()).toEqual(['v4-10-244-1-0-24', 'v4-10-244-3-0-24', 'v4-10-244-9-0-24', 'x']);
  });

  it('keeps its index right through updates, moves and deletions, and signals each change', () => {
    const a = new PodCidrAuthority(['10.244.0.0/16']);
    let changes = 0;
    a.on('change', () => changes++);
    a.setBlock(block('10.244.1.0/24', 'n1'));
    a.setBlock(block('10.244.1.0/24', 'n1')); // unchanged: no signal
    a.setNodePodCidrs('n1', ['10.244.1.0/24']); // the same CIDR from two sources
    a.removeBlock(blockObjectName('10.244.1.0/24'));
    expect(a.assigned('n1')).toEqual(['10.244.1.0/24']); // spec.podCIDRs still says so
    a.setNodePodCidrs('n1', []);
    expect(a.assigned('n1')).toEqual([]);
    a.setBlock(block('10.244.1.0/24', 'n2')); // the block moved to another node (re-created)
    expect(a.verify('n1', ['10.244.1.0/24']).accepted).toEqual([]);
    expect(a.verify('n2', ['10.244.1.0/24']).accepted).toEqual(['10.244.1.0/24']);
    expect(changes).toBe(5);
  });
});
