import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  blockCount,
  blockIndex,
  canonicalCidr,
  cidrFamily,
  contains,
  containsCidr,
  firstUsable,
  formatCidr,
  gateway,
  lastUsable,
  nthBlock,
  overlaps,
  parseCidr,
  size,
  splitBlocks,
} from '../../../ipam/cidr.ts';
import { IpamError } from '../../../ipam/errors.ts';

describe('parse and canonicalize', () => {
  it('clears host bits and compresses IPv6', () => {
    expect(canonicalCidr('10.244.3.7/24')).toBe('10.244.3.0/24');
    expect(canonicalCidr(' FD00:0:0:0::5/64 ')).toBe('fd00::/64');
    expect(canonicalCidr('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(canonicalCidr('::/0')).toBe('::/0');
    expect(cidrFamily('10.0.0.0/8')).toBe(4);
    expect(cidrFamily('fd00::/8')).toBe(6);
  });

  it('rejects malformed input with an IpamError naming the input', () => {
    for (const bad of [
      '10.0.0.0',
      '10.0.0.0/33',
      'fd00::/129',
      '10.0.0/24',
      '10/8',
      '0x0a.0.0.0/8',
      'abc/8',
      '10.0.0.0/-1',
      '',
    ]) {
      expect(() => parseCidr(bad)).toThrow(IpamError);
    }
    expect(() => parseCidr('10.0.0.0/33')).toThrow(/10\.0\.0\.0\/33/);
  });
});

describe('usable range and gateway', () => {
  it('IPv4 /24 excludes network and broadcast', () => {
    expect(firstUsable('10.244.3.0/24')).toBe('10.244.3.1');
    expect(lastUsable('10.244.3.0/24')).toBe('10.244.3.254');
    expect(gateway('10.244.3.0/24')).toBe('10.244.3.1');
  });
  it('IPv4 /31 uses both addresses, /32 the single one', () => {
    expect(firstUsable('10.0.0.4/31')).toBe('10.0.0.4');
    expect(lastUsable('10.0.0.4/31')).toBe('10.0.0.5');
    expect(firstUsable('10.0.0.9/32')).toBe('10.0.0.9');
    expect(lastUsable('10.0.0.9/32')).toBe('10.0.0.9');
  });
  it('IPv6 excludes only the subnet-router anycast address', () => {
    expect(firstUsable('fd00:10::/80')).toBe('fd00:10::1');
    expect(lastUsable('fd00:10::/80')).toBe('fd00:10::ffff:ffff:ffff');
    expect(firstUsable('fd00::1/128')).toBe('fd00::1');
    expect(size('fd00::/80')).toBe(2n ** 48n);
  });
});

describe('contains and overlaps', () => {
  it('contains', () => {
    expect(contains('10.244.0.0/16', '10.244.255.255')).toBe(true);
    expect(contains('10.244.0.0/16', '10.245.0.0')).toBe(false);
    expect(contains('10.244.0.0/16', 'fd00::1')).toBe(false);
    expect(contains('fd00::/64', 'fd00::ffff:1')).toBe(true);
    expect(contains('0.0.0.0/0', '203.0.113.9')).toBe(true);
    expect(containsCidr('10.244.0.0/16', '10.244.3.0/24')).toBe(true);
    expect(containsCidr('10.244.3.0/24', '10.244.0.0/16')).toBe(false);
  });
  it('overlaps', () => {
    expect(overlaps('10.244.0.0/16', '10.244.3.0/24')).toBe(true);
    expect(overlaps('10.244.3.0/24', '10.244.0.0/16')).toBe(true);
    expect(overlaps('10.244.3.0/24', '10.244.4.0/24')).toBe(false);
    expect(overlaps('10.0.0.0/8', 'fd00::/8')).toBe(false);
    expect(overlaps('fd00::/64', 'fd00::1:0:0:0/80')).toBe(true);
  });
  it('overlaps is symmetric and agrees with containment of network addresses (property)', () => {
    const v4 = fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 32 }));
    fc.assert(
      fc.property(v4, v4, ([a, pa], [b, pb]) => {
        const ca = formatCidr({ family: 4, network: BigInt(a), prefix: 0 }).split('/')[0];
        const cb = formatCidr({ family: 4, network: BigInt(b), prefix: 0 }).split('/')[0];
        const x = `${ca}/${pa}`;
        const y = `${cb}/${pb}`;
        const expected = contains(x, parseNet(y)) || contains(y, parseNet(x));
        expect(overlaps(x, y)).toBe(expected);
        expect(overlaps(y, x)).toBe(expected);
      }),
    );
  });
});

function parseNet(c: string): string {
  return canonicalCidr(c).split('/')[0] as string;
}

describe('node blocks', () => {
  it('splits an IPv4 cluster CIDR into /24 blocks', () => {
    expect(blockCount('10.244.0.0/16', 24)).toBe(256n);
    expect(formatCidr(nthBlock('10.244.0.0/16', 24, 0))).toBe('10.244.0.0/24');
    expect(formatCidr(nthBlock('10.244.0.0/16', 24, 255))).toBe('10.244.255.0/24');
    expect(() => nthBlock('10.244.0.0/16', 24, 256)).toThrow(IpamError);
    expect([...splitBlocks('10.0.0.0/30', 31)].map(formatCidr)).toEqual(['10.0.0.0/31', '10.0.0.2/31']);
    expect(blockIndex('10.244.0.0/16', '10.244.7.0/24')).toBe(7n);
    expect(blockIndex('10.244.0.0/16', '10.245.7.0/24')).toBeUndefined();
  });
  it('splits an IPv6 /64 into /80 blocks and a /56 into /120 blocks', () => {
    expect(blockCount('fd00:10:244::/64', 80)).toBe(65536n);
    expect(formatCidr(nthBlock('fd00:10:244::/64', 80, 1))).toBe('fd00:10:244:0:1::/80');
    expect(formatCidr(nthBlock('fd00:10:244::/64', 80, 65535))).toBe('fd00:10:244:0:ffff::/80');
    expect(blockCount('fd00::/56', 120)).toBe(2n ** 64n);
    expect(formatCidr(nthBlock('fd00::/56', 120, 2n ** 64n - 1n))).toBe('fd00::ff:ffff:ffff:ffff:ff00/120');
  });
  it('refuses a block prefix that does not fit', () => {
    expect(() => blockCount('10.244.0.0/16', 8)).toThrow(/does not fit/);
    expect(() => blockCount('10.244.0.0/16', 33)).toThrow(IpamError);
  });
});
