import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { choosePath, leadsPunch } from '../../../overlay/path-policy.ts';

describe('choosePath', () => {
  const natted = { site: 'b', publicReachable: false, punchPort: 4002 };
  it('same site → host-gw, whatever the addresses', () => {
    expect(choosePath({ site: 'a', publicReachable: false }, { site: 'a', publicReachable: true }, true)).toEqual({
      kind: 'host-gw',
    });
  });
  it('peer with a public address → direct', () => {
    expect(
      choosePath({ site: 'a', publicReachable: false }, { site: 'cloud', publicReachable: true }, false).kind,
    ).toBe('direct');
  });
  it('both behind NAT → relayed, punch when both announce a punch port', () => {
    expect(choosePath({ site: 'a', publicReachable: false, punchPort: 4002 }, natted, true)).toEqual({
      kind: 'relayed',
      punch: true,
    });
    expect(choosePath({ site: 'a', publicReachable: false }, natted, true)).toEqual({ kind: 'relayed', punch: false });
  });
  it('we are public, the peer is not → reverse (reach it via the relay, it dials us)', () => {
    expect(choosePath({ site: 'cloud', publicReachable: true }, natted, true).kind).toBe('reverse');
  });
  it('peer behind NAT and no relay → none, with a reason', () => {
    const plan = choosePath({ site: 'a', publicReachable: false }, natted, false);
    expect(plan.kind).toBe('none');
  });
  it('never tunnels within a site and never relays a public peer (property)', () => {
    const side = fc.record({ site: fc.constantFrom('a', 'b', 'c'), publicReachable: fc.boolean() });
    fc.assert(
      fc.property(side, side, fc.boolean(), (self, peer, relays) => {
        const plan = choosePath(self, peer, relays);
        if (self.site === peer.site) return plan.kind === 'host-gw';
        if (peer.publicReachable) return plan.kind === 'direct';
        return plan.kind !== 'direct' && plan.kind !== 'host-gw';
      }),
    );
  });
});

describe('leadsPunch', () => {
  it('exactly one of two peers leads', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.string({ minLength: 1 }), (a, b) => {
        fc.pre(a !== b);
        return leadsPunch(a, b) !== leadsPunch(b, a);
      }),
    );
  });
});
