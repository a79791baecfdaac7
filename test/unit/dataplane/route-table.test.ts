import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CidrError, parseCidr } from '../../../common/cidr.ts';
import { RouteTable } from '../../../dataplane/route-table.ts';

/** Reference LPM: scan every prefix, compare bit by bit, keep the longest that matches. */
function bruteForce(routes: Map<string, string>, address: Uint8Array): string | undefined {
  let best: string | undefined;
  let bestLen = -1;
  for (const [cidr, value] of routes) {
    const p = parseCidr(cidr);
    if (p.bytes.length !== address.length) continue;
    let match = true;
    for (let i = 0; i < p.prefixLength && match; i++) {
      const mask = 0x80 >> (i & 7);
      match = (p.bytes[i >> 3]! & mask) === (address[i >> 3]! & mask);
    }
    if (match && p.prefixLength > bestLen) {
      best = value;
      bestLen = p.prefixLength;
    }
  }
  return best;
}

describe('RouteTable', () => {
  it('picks the longest of overlapping IPv4 prefixes, including the default route', () => {
    const t = new RouteTable<string>();
    t.insert('0.0.0.0/0', 'default');
    t.insert('10.0.0.0/8', 'a');
    t.insert('10.1.0.0/16', 'b');
    t.insert('10.1.2.0/24', 'c');
    t.insert('10.1.2.3/32', 'host');
    expect(t.lookup('10.1.2.3')).toBe('host');
    expect(t.lookup('10.1.2.4')).toBe('c');
    expect(t.lookup('10.1.3.1')).toBe('b');
    expect(t.lookup('10.200.0.1')).toBe('a');
    expect(t.lookup('192.0.2.1')).toBe('default');
    expect(t.lookup(new Uint8Array([10, 1, 2, 9]))).toBe('c');
    expect(t.lookupV4(0x0a010203)).toBe('host');
  });

  it('matches IPv6 and keeps the two families apart', () => {
    const t = new RouteTable<string>();
    t.insert('fd00::/8', 'ula');
    t.insert('fd00:10:1::/48', 'node1');
    t.insert('fd00:10:1:2::/64', 'pod-net');
    t.insert('10.0.0.0/8', 'v4');
    expect(t.lookup('fd00:10:1:2::5')).toBe('pod-net');
    expect(t.lookup('fd00:10:1:3::5')).toBe('node1');
    expect(t.lookup('fdff::1')).toBe('ula');
    expect(t.lookup('2001:db8::1')).toBeUndefined();
    expect(t.lookup('::ffff:10.0.0.1')).toBeUndefined(); // v4-mapped v6 is not the v4 route
    const bytes = new Uint8Array(40);
    bytes.set(parseCidr('fd00:10:1:2::/64').bytes, 24);
    expect(t.lookupV6(bytes, 24)).toBe('pod-net');
  });

  it('applies updates at once: replace, remove, re-add, clear', () => {
    const t = new RouteTable<string>();
    t.insert('10.1.0.0/16', 'b');
    t.insert('10.1.2.0/24', 'c');
    expect(t.lookup('10.1.2.1')).toBe('c');
    t.insert('10.1.2.0/24', 'c2');
    expect(t.lookup('10.1.2.1')).toBe('c2');
    expect(t.remove('10.1.2.0/24')).toBe(true);
    expect(t.remove('10.1.2.0/24')).toBe(false);
    expect(t.lookup('10.1.2.1')).toBe('b');
    expect(t.remove('10.1.0.0/17')).toBe(false); // not a route, only a path inside the trie
    expect(t.size).toBe(1);
    t.insert('10.1.2.99/24', 'normalised');
    expect(t.entries()).toContainEqual(['10.1.2.0/24', 'normalised']);
    t.clear();
    expect(t.size).toBe(0);
    expect(t.lookup('10.1.2.1')).toBeUndefined();
  });

  it('rejects malformed CIDRs and addresses with a CidrError', () => {
    const t = new RouteTable<string>();
    for (const bad of ['10.0.0.0', '10.0.0.0/33', 'fd00::/129', 'nonsense/8', '10.1/16', '']) {
      expect(() => t.insert(bad, 'x'), bad).toThrow(CidrError);
    }
    expect(() => t.lookup('not-an-ip')).toThrow(CidrError);
    expect(() => t.lookup(new Uint8Array(5))).toThrow(CidrError);
  });

  it('agrees with a brute-force scan for random prefixes, lookups and removals (v4 and v6)', () => {
    const v4 = fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 }));
    const v6 = fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 }));
    const toCidr = ([bytes, len]: [Uint8Array, number]) =>
      bytes.length === 4 ? `${bytes.join('.')}/${len}` : `${parseCidrFromBytes(bytes)}/${len}`;
    fc.assert(
      fc.property(
        fc.array(fc.oneof(v4, v6), { maxLength: 60 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        fc.array(
          fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 16, maxLength: 16 })),
          {
            maxLength: 40,
          },
        ),
        (prefixes, removals, probes) => {
          const t = new RouteTable<string>();
          const reference = new Map<string, string>();
          prefixes.forEach((p, i) => {
            const cidr = parseCidr(toCidr(p)).text;
            t.insert(cidr, `r${i}`);
            reference.set(cidr, `r${i}`);
          });
          const keys = [...reference.keys()];
          for (const r of removals) {
            if (keys.length === 0) break;
            const cidr = keys[r % keys.length]!;
            expect(t.remove(cidr)).toBe(reference.delete(cidr));
          }
          // probe both random addresses and the prefixes' own network addresses
          const all = [...probes, ...keys.map((k) => parseCidr(k).bytes)];
          for (const address of all) expect(t.lookup(address)).toBe(bruteForce(reference, address));
        },
      ),
      { numRuns: 300 },
    );
  });
});

function parseCidrFromBytes(bytes: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return words.join(':');
}

describe('RouteTable.overlapping', () => {
  /** Reference: two prefixes overlap when the shorter one's bits match the longer one's. */
  function overlap(a: string, b: string): boolean {
    const x = parseCidr(a);
    const y = parseCidr(b);
    if (x.version !== y.version) return false;
    const n = Math.min(x.prefixLength, y.prefixLength);
    for (let i = 0; i < n; i++) {
      const bit = (c: typeof x) => (c.bytes[i >> 3]! >> (7 - (i & 7))) & 1;
      if (bit(x) !== bit(y)) return false;
    }
    return true;
  }

  it('finds routes around, equal to and inside a CIDR, and nothing else', () => {
    const t = new RouteTable<string>();
    for (const c of ['10.0.0.0/8', '10.2.0.0/24', '10.2.0.7/32', '10.3.0.0/24', 'fd00::/64']) t.insert(c, c);
    expect(t.overlapping('10.2.0.0/16').sort()).toEqual(['10.0.0.0/8', '10.2.0.0/24', '10.2.0.7/32']);
    expect(t.overlapping('10.2.0.128/25').sort()).toEqual(['10.0.0.0/8', '10.2.0.0/24']);
    expect(t.overlapping('11.0.0.0/8')).toEqual([]);
    expect(t.overlapping('0.0.0.0/0').length).toBe(4);
    expect(t.overlapping('fd00::1/128')).toEqual(['fd00::/64']);
  });

  it('agrees with a brute-force overlap test on random tables', () => {
    const cidr = fc
      .tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }))
      .map(([a, len]) => parseCidr(`${[24, 16, 8, 0].map((s) => (a >>> s) & 255).join('.')}/${len}`).text);
    fc.assert(
      fc.property(fc.uniqueArray(cidr, { maxLength: 30 }), cidr, (routes, probe) => {
        const t = new RouteTable<string>();
        for (const c of routes) t.insert(c, c);
        expect(t.overlapping(probe).sort()).toEqual(routes.filter((r) => overlap(r, probe)).sort());
      }),
      { numRuns: 500 },
    );
  });
});
