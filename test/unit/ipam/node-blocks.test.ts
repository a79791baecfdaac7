import { describe, expect, it } from 'vitest';
import { formatCidr, nthBlock } from '../../../ipam/cidr.ts';
import { blockObjectName, firstCandidateIndex, parseClusterCidrs } from '../../../ipam/node-blocks.ts';

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

describe('IPAMBlock object names', () => {
  it('encode the canonical CIDR', () => {
    expect(blockObjectName('10.244.3.0/24')).toBe('v4-10-244-3-0-24');
    expect(blockObjectName('10.244.3.9/24')).toBe('v4-10-244-3-0-24');
    expect(blockObjectName('fd00:10:244:0:3::/80')).toBe('v6-fd00-10-244-0-3---80');
    expect(blockObjectName('::/0')).toBe('v6----0');
  });

  it('are valid object names and distinct for distinct blocks', () => {
    const names = new Set<string>();
    for (const [cluster, prefix] of [
      ['10.0.0.0/14', 24],
      ['10.0.0.0/24', 28],
      ['fd00::/64', 80],
      ['fd00::/112', 120],
      ['::/120', 124],
    ] as const) {
      for (let i = 0; i < 16; i++) {
        const name = blockObjectName(formatCidr(nthBlock(cluster, prefix, i)));
        expect(name).toMatch(DNS_SUBDOMAIN);
        expect(name.length).toBeLessThanOrEqual(253);
        names.add(name);
      }
    }
    expect(names.size).toBe(5 * 16);
  });
});

describe('cluster CIDRs and candidates', () => {
  it('accepts one CIDR per family and refuses two of one family', () => {
    const m = parseClusterCidrs(['10.244.0.0/16', 'fd00:10:244::/64']);
    expect([...m.keys()]).toEqual([4, 6]);
    expect(() => parseClusterCidrs(['10.244.0.0/16', '10.245.0.0/16'])).toThrow('two IPv4 cluster CIDRs configured');
    expect(() => parseClusterCidrs([])).toThrow('no cluster CIDR configured');
    expect(() => parseClusterCidrs(['10.244.0.0'])).toThrow(/invalid CIDR/);
  });

  it('spreads first candidates across the cluster CIDR', () => {
    const starts = Array.from({ length: 1000 }, (_, i) => firstCandidateIndex(`node-${i}`, 256n));
    expect(starts.every((s) => s >= 0n && s < 256n)).toBe(true);
    expect(new Set(starts).size).toBeGreaterThan(200); // uniform: ~250 distinct expected
    expect(firstCandidateIndex('node-1', 2n ** 64n)).toBe(firstCandidateIndex('node-1', 2n ** 64n));
  });
});
