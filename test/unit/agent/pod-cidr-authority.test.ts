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

  it('names the CIDRs each change touched: a block added, moved, made invalid or removed; spec.podCIDRs before and after', () => {
    const a = new PodCidrAuthority(['10.244.0.0/16']);
    const seen: string[][] = [];
    a.on('change', (c) => seen.push([...c.cidrs]));
    a.setBlock(block('10.244.1.0/24', 'n1'));
    a.setBlock(block('10.244.1.0/24', 'n2')); // the same object names another node
    a.setBlock(block('10.244.1.0/24', 42)); // now garbage: the assignment it made is gone
    a.setBlock(block('10.244.2.0/24', 'n1'));
    a.removeBlock(blockObjectName('10.244.2.0/24'));
    a.setNodePodCidrs('n3', ['10.244.8.0/24', '10.244.9.0/24']);
    a.setNodePodCidrs('n3', ['10.244.9.0/24']);
    a.removeBlock(blockObjectName('10.244.7.0/24')); // never known: no change
    expect(seen).toEqual([
      ['10.244.1.0/24'],
      ['10.244.1.0/24'],
      ['10.244.1.0/24'],
      ['10.244.2.0/24'],
      ['10.244.2.0/24'],
      ['10.244.8.0/24', '10.244.9.0/24'],
      ['10.244.8.0/24', '10.244.9.0/24'],
    ]);
  });

  it('a node cannot refuse everyone with one big block: only blocks of the cluster block size count', () => {
    const a = new PodCidrAuthority(['10.244.0.0/16'], { v4: 24 });
    a.setBlock(block('10.244.1.0/24', 'n1'));
    a.setBlock(block('10.244.2.0/24', 'n2'));
    // A compromised node creates a correctly named /16 block: it used to overlap, and so
    // refuse, every other node's block in every agent.
    a.setBlock(block('10.244.0.0/16', 'evil'));
    a.setBlock(block('10.244.1.0/25', 'evil'));
    expect(a.verify('n1', ['10.244.1.0/24']).accepted).toEqual(['10.244.1.0/24']);
    expect(a.verify('n2', ['10.244.2.0/24']).accepted).toEqual(['10.244.2.0/24']);
    expect(a.verify('evil', ['10.244.0.0/16', '10.244.1.0/25']).accepted).toEqual([]);
    expect(a.badBlocks.get('v4-10-244-0-0-16')).toMatch(/not a \/24 block/);
  });

  it("spec.podCIDRs outrank a block: the block is refused, the node's assignment stays", () => {
    const a = new PodCidrAuthority(['10.244.0.0/16'], { v4: 24 });
    a.setNodePodCidrs('n1', ['10.244.8.0/22']);
    a.setBlock(block('10.244.9.0/24', 'evil'));
    expect(a.verify('n1', ['10.244.8.0/22']).accepted).toEqual(['10.244.8.0/22']);
    expect(a.verify('evil', ['10.244.9.0/24']).refused[0]!.reason).toMatch(/overlaps pod CIDRs assigned to n1/);
    // Two spec.podCIDRs that overlap (a broken controller-manager): neither is trusted.
    a.setNodePodCidrs('n2', ['10.244.10.0/23']);
    a.setNodePodCidrs('n3', ['10.244.11.0/24']);
    expect(a.verify('n2', ['10.244.10.0/23']).accepted).toEqual([]);
    expect(a.verify('n3', ['10.244.11.0/24']).accepted).toEqual([]);
  });
});
