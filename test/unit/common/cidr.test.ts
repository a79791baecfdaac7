// The one IP/CIDR vocabulary: what other nodes may publish, and that ipam/ (bigint blocks)
// and dataplane/ (route table bytes) read the same text the same way.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CidrError, formatIp, isCanonicalCidr, isIpAddress, parseCidr, parseIp } from '../../../common/cidr.ts';
import { formatCidr, parseCidr as parseIpamCidr } from '../../../ipam/cidr.ts';
import { IpamError } from '../../../ipam/errors.ts';

describe('common/cidr', () => {
  it('refuses the legacy forms ipaddr.js alone would take, zones and bad prefixes', () => {
    for (const bad of [
      '10.1/16',
      '0xa.0.0.0/8',
      '167772161/8',
      '010.0.0.0/8',
      '10.0.0.0',
      '10.0.0.0/33',
      'fd00::/129',
      'fe80::1%eth0/64',
      '10.0.0.0/-1',
      '10.0.0.0/ 8',
      '10.0.0.0/1e1',
      ' 10.0.0.0/8',
      '',
    ]) {
      expect(() => parseCidr(bad), bad).toThrow(CidrError);
      expect(isCanonicalCidr(bad), bad).toBe(false);
    }
    for (const bad of ['10.1', '0xa.0.0.1', '1.2.3.4.5', 'fe80::1%eth0', '', 'example.com']) {
      expect(isIpAddress(bad), bad).toBe(false);
      expect(() => parseIp(bad), bad).toThrow(CidrError);
    }
    expect(isIpAddress(5)).toBe(false);
    expect(isCanonicalCidr(undefined)).toBe(false);
  });

  it('clears host bits and spells the canonical text; only that text is canonical', () => {
    expect(parseCidr('10.244.3.7/24')).toMatchObject({ version: 4, prefixLength: 24, text: '10.244.3.0/24' });
    expect(parseCidr('FD00:0:0::1/64').text).toBe('fd00::/64');
    expect(isCanonicalCidr('10.244.3.0/24')).toBe(true);
    expect(isCanonicalCidr('10.244.3.7/24')).toBe(false);
    expect(isCanonicalCidr('FD00::/64')).toBe(false);
    expect(isCanonicalCidr('10.244.3.0/024')).toBe(false);
    expect(formatIp(parseIp('fd00:0::1'))).toBe('fd00::1');
    expect(() => formatIp([1, 2, 3])).toThrow(CidrError);
  });

  it('ipam reads every text exactly as the dataplane does, surrounding whitespace aside (property)', () => {
    const text = fc.oneof(
      fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 40 })).map(([a, n]) => `${a}/${n}`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 135 })).map(([a, n]) => `${a}/${n}`),
      fc.tuple(fc.ipV4Extended(), fc.nat(33)).map(([a, n]) => `${a}/${n}`),
      fc.string({ maxLength: 20 }),
    );
    fc.assert(
      fc.property(text, (t) => {
        let common: string | undefined;
        let ipam: string | undefined;
        try {
          common = parseCidr(t.trim()).text;
        } catch (err) {
          expect(err).toBeInstanceOf(CidrError);
        }
        try {
          ipam = formatCidr(parseIpamCidr(t));
        } catch (err) {
          expect(err).toBeInstanceOf(IpamError);
        }
        expect(ipam).toBe(common);
      }),
      { numRuns: 2000 },
    );
  });
});
