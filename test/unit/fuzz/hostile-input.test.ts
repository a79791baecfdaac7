// Thousands of random and adversarial inputs through the real parsers and state machines
// that take input from other nodes or from the runtime: Node annotations (PeerDirectory +
// PodCidrAuthority + NodeWatch + PeerRouteVerifier + the real Forwarder), tunnel frames (FrameDecoder +
// Forwarder.receive) and CNI inputs (cni/config.ts). Whatever arrives, nothing escapes but
// the documented errors, and the invariants the trust model promises still hold.
import { EventEmitter } from 'node:events';
import type { V1Node } from '@kubernetes/client-node';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PodCidrAuthority } from '../../../agent/pod-cidr-authority.ts';
import { parseEnv, parseNetConf } from '../../../cni/config.ts';
import { CniError } from '../../../cni/spec.ts';
import { parseCidr } from '../../../common/cidr.ts';
import { silentLogger } from '../../../common/log.ts';
import { Forwarder } from '../../../dataplane/forwarder.ts';
import { encodeFrame, FrameError } from '../../../dataplane/frame-codec.ts';
import { packetsForTun } from '../../../dataplane/tun-device.ts';
import type { Packet, PacketIO } from '../../../dataplane/types.ts';
import { blockObjectName } from '../../../ipam/node-blocks.ts';
import { isPublicIp } from '../../../overlay/addresses.ts';
import { PeerDirectory } from '../../../overlay/directory.ts';
import { PunchError, type PunchOffer, validateOffer } from '../../../overlay/hole-punch.ts';
import { parseReply, RelayBindingError } from '../../../overlay/relay-binding.ts';
import { peerStack } from '../../support/peer-nodes.ts';
import { udp4, udp6 } from '../dataplane/packets.ts';

const RUNS = Number(process.env.EDGEMESH_FUZZ_RUNS ?? 300);
const CLUSTER = ['10.244.0.0/16', 'fd00:10:244::/56'];
const PEER_IDS = [
  '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK',
  '12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq',
  '12D3KooWSvKm7CjcLgiPcpr2xjZQ3tMF25U3GHoW6vWkN8w9nqNb',
];

/** Each node's own block, as the cluster assigns it ("OWN" in a generated value stands for it). */
const OWN: Record<string, string> = {
  n1: '10.244.1.0/24',
  n2: '10.244.2.0/24',
  n3: '10.244.3.0/24',
  n4: 'fd00:10:244:1::/80',
  me: '10.244.0.0/24',
};

/** Blocks of the cluster's size that nodes may legitimately hold. */
const goodCidr = fc.constantFrom('10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24', 'fd00:10:244:1::/80');

/** Strings a hostile or broken node might put in a CIDR list. */
const cidrText = fc.oneof(
  { weight: 3, arbitrary: goodCidr },
  fc.constantFrom(
    '10.244.1.0/24',
    '10.244.2.0/24',
    '10.244.1.7/32',
    '10.244.0.0/16',
    '0.0.0.0/0',
    '::/0',
    '10.1/16',
    '0xa.0.0.0/8',
    '167772161/8',
    '010.244.3.0/24',
    '10.244.3.7/24',
    'fd00:10:244:1::/80',
    'fd00:10:244:1::1/80',
    '192.168.0.0/16',
    '10.244.1.0/33',
    '',
    ' ',
    '\n',
    '10.244.1.0/24\u0000',
  ),
  fc.tuple(fc.nat(255), fc.nat(255), fc.nat(32)).map(([a, b, len]) => `10.244.${a}.${b}/${len}`),
  fc.string({ maxLength: 20 }),
);

/** Mostly a valid value (so peers get far enough to be checked), sometimes garbage. */
const annotationValue = (good: fc.Arbitrary<string>) =>
  fc.oneof(
    { weight: 12, arbitrary: good },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constant('') },
  );

const nodeArb = fc.record({
  name: fc.constantFrom('n1', 'n2', 'n3', 'n4', 'me'),
  peerId: annotationValue(fc.constantFrom(...PEER_IDS)),
  cidrs: fc.oneof(
    { weight: 6, arbitrary: fc.constant('OWN') },
    { weight: 2, arbitrary: goodCidr },
    fc.array(cidrText, { maxLength: 4 }).map((l) => l.join(',')),
  ),
  multiaddrs: annotationValue(
    fc.constantFrom(
      '["/ip4/192.168.1.2/tcp/4001"]',
      '["/ip4/203.0.113.9/tcp/4001"]',
      '[1,2]',
      '{"a":1}',
      '["garbage"]',
      '[]',
    ),
  ),
  site: annotationValue(fc.constantFrom('a', 'b')),
  nodeIp: annotationValue(
    fc.oneof(
      { weight: 6, arbitrary: fc.constant('192.168.1.2') },
      fc.constantFrom('127.0.0.1', 'fe80::1', '10.1', '::', '192.168.1.300'),
    ),
  ),
  punchPort: annotationValue(
    fc.oneof({ weight: 6, arbitrary: fc.constant('4002') }, fc.constantFrom('0', '70000', '-1', '1e3')),
  ),
  relay: fc.constantFrom(undefined, undefined, undefined, 'true', 'false', 'TRUE'),
  podCIDRs: fc.option(fc.array(cidrText, { maxLength: 2 }), { nil: undefined }),
  withAnnotations: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, fc.constant(false)),
});

function toV1Node(n: fc.Arbitrary<unknown> extends never ? never : Record<string, unknown>): V1Node {
  const x = n as {
    name: string;
    peerId: string;
    cidrs: string;
    multiaddrs: string;
    site: string;
    nodeIp: string;
    punchPort: string;
    relay?: string;
    podCIDRs?: string[];
    withAnnotations: boolean;
  };
  return {
    metadata: {
      name: x.name,
      labels: x.relay === undefined ? {} : { 'edgemesh.io/relay': x.relay },
      ...(x.withAnnotations
        ? {
            annotations: {
              'edgemesh.io/peer-id': x.peerId,
              'edgemesh.io/multiaddrs': x.multiaddrs,
              'edgemesh.io/pod-cidrs': x.cidrs === 'OWN' ? OWN[x.name]! : x.cidrs,
              'edgemesh.io/site': x.site,
              'edgemesh.io/node-ip': x.nodeIp,
              'edgemesh.io/punch-port': x.punchPort,
            },
          }
        : {}),
    },
    ...(x.podCIDRs ? { spec: { podCIDRs: x.podCIDRs } } : {}),
    status: { addresses: [{ type: 'InternalIP', address: x.nodeIp }] },
  };
}

const blockArb = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom('n1', 'n2', 'n3', 'n4').map((node) => ({ cidr: OWN[node]!, node, honestName: true })),
  },
  fc.record({
    cidr: fc.oneof({ weight: 4, arbitrary: goodCidr }, cidrText),
    node: fc.constantFrom('n1', 'n2', 'n3', 'n4', 'me', ''),
    honestName: fc.boolean(),
  }),
);

type Event =
  | { kind: 'add' | 'update' | 'delete'; node: Record<string, unknown> }
  | { kind: 'block'; block: { cidr: string; node: string; honestName: boolean } }
  | { kind: 'unblock'; block: { cidr: string; node: string; honestName: boolean } };

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ kind: fc.constantFrom('add', 'update', 'delete'), node: nodeArb }) as fc.Arbitrary<Event>,
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('block'), block: blockArb }) as fc.Arbitrary<Event> },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('unblock'), block: blockArb }) as fc.Arbitrary<Event> },
);

function overlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  if (x.version !== y.version) return false;
  for (let i = 0; i < Math.min(x.prefixLength, y.prefixLength); i++) {
    const bit = (c: typeof x) => (c.bytes[i >> 3]! >> (7 - (i & 7))) & 1;
    if (bit(x) !== bit(y)) return false;
  }
  return true;
}

const inside = (cidr: string) =>
  CLUSTER.some((c) => overlap(c, cidr) && parseCidr(c).prefixLength <= parseCidr(cidr).prefixLength);

describe('fuzz: hostile Node annotations and IPAMBlocks', () => {
  it('never throw out of the watch, and never route an unbacked, foreign or overlapping CIDR', () => {
    const tun: PacketIO = { offload: false, onBatch: () => undefined, write: (b) => b.length };
    let runsWithRoutes = 0;
    let runsWithRefusals = 0;
    fc.assert(
      fc.property(fc.array(eventArb, { minLength: 1, maxLength: 25 }), (events) => {
        const directory = new PeerDirectory();
        const forwarder = new Forwarder({ tun, localCidrs: ['10.244.0.0/24'], logger: silentLogger() });
        const authority = new PodCidrAuthority(CLUSTER, { v4: 24, v6: 80 });
        authority.setBlock({
          metadata: { name: blockObjectName('10.244.0.0/24') },
          spec: { cidr: '10.244.0.0/24', node: 'me' },
        });
        const informer = Object.assign(new EventEmitter(), {
          start: async () => undefined,
          stop: async () => undefined,
          list: () => [],
        });
        const { binding, verifier, watch } = peerStack({
          informer,
          authority,
          forwarder,
          localCidrs: ['10.244.0.0/24'],
          directory,
        });
        void watch.start();
        const blockOf = (b: { cidr: string; node: string; honestName: boolean }) => {
          let name = 'v4-bogus';
          try {
            if (b.honestName) name = blockObjectName(b.cidr);
          } catch {
            // not a CIDR at all: keep the bogus name
          }
          return { metadata: { name }, spec: { cidr: b.cidr, node: b.node } };
        };
        for (const e of events) {
          if (e.kind === 'block') expect(() => authority.setBlock(blockOf(e.block))).not.toThrow();
          else if (e.kind === 'unblock')
            expect(() => authority.removeBlock(blockOf(e.block).metadata.name)).not.toThrow();
          else expect(() => informer.emit(e.kind, toV1Node(e.node))).not.toThrow();
          verifier.reverifyAll(); // what the scheduled pass does after a burst
        }
        expect(watch.handlerErrors + verifier.handlerErrors + binding.errors).toBe(0);
        // The forwarder's own overlap guard never had to step in.
        expect(binding.refusedByForwarder).toBe(0);
        const peers = directory.list();
        // One trusted node per peer ID.
        expect(new Set(peers.map((p) => p.peerId)).size).toBe(peers.length);
        const routed = peers.flatMap((p) => directory.routesOf(p.node).map((cidr) => ({ node: p.node, cidr })));
        if (routed.length > 0) runsWithRoutes++;
        if (directory.refusals().size > 0) runsWithRefusals++;
        for (const r of routed) {
          expect(inside(r.cidr), r.cidr).toBe(true);
          expect(authority.assigned(r.node)).toContain(r.cidr);
          expect(overlap(r.cidr, '10.244.0.0/24'), r.cidr).toBe(false);
        }
        for (const a of routed) {
          for (const b of routed)
            if (a.node !== b.node) expect(overlap(a.cidr, b.cidr), `${a.cidr} ${b.cidr}`).toBe(false);
        }
        // The forwarder routes exactly the verified CIDRs: nothing else reaches it.
        expect(Object.keys(forwarder.stats().peers).sort()).toEqual(peers.map((p) => p.node).sort());
        expect(forwarder.stats().refusedCidrs).toEqual({});
        void watch.stop();
        verifier.stop();
      }),
      { numRuns: RUNS * 2 },
    );
    // The generator reaches both interesting states, not only "everything refused". Routes
    // come out of about 5 % of the runs (a peer needs its honest block, its own CIDRs and no
    // clash): the bound sits well below that, so chance alone does not fail the test.
    expect(runsWithRoutes).toBeGreaterThan(RUNS / 60);
    expect(runsWithRefusals).toBeGreaterThan(RUNS / 20);
  }, 120_000);
});

describe('fuzz: frames from a peer', () => {
  function setup() {
    const written: Packet[] = [];
    // What a TUN without offloads does with a write: hostile vnet headers reach segmentation.
    const tun: PacketIO = {
      offload: false,
      onBatch: () => undefined,
      write: (b) => {
        let accepted = 0;
        for (const p of b) {
          const ready = packetsForTun(p, false, []);
          if (!ready.ok) continue;
          written.push(...ready.packets);
          accepted++;
        }
        return accepted;
      },
    };
    const fwd = new Forwarder({ tun, localCidrs: ['10.1.0.0/24', 'fd00:10:1::/48'], logger: silentLogger() });
    fwd.setPeer('peer', ['10.2.0.0/24', 'fd00:10:2::/48']);
    return { fwd, written };
  }

  /** Every packet written to the TUN passed policy: src in the peer's CIDRs, dst in ours, no super-packet left. */
  function checkWritten(written: Packet[]) {
    for (const p of written) {
      const v = p.data[0]! >> 4;
      if (v === 4) {
        expect(p.data[12]).toBe(10);
        expect([p.data[13], p.data[14]]).toEqual([2, 0]);
        expect([p.data[16], p.data[17], p.data[18]]).toEqual([10, 1, 0]);
      } else {
        expect(v).toBe(6);
        expect(Array.from(p.data.subarray(8, 14))).toEqual([0xfd, 0, 0, 0x10, 0, 2]);
        expect(Array.from(p.data.subarray(24, 30))).toEqual([0xfd, 0, 0, 0x10, 0, 1]);
      }
      expect(p.data.length).toBeLessThanOrEqual(65575);
    }
  }

  const receiveAll = (fwd: Forwarder, chunks: Uint8Array[]) => {
    for (const c of chunks) {
      try {
        fwd.receive('peer', c);
      } catch (err) {
        // The only error a stream may cause: the caller resets that stream.
        expect(err).toBeInstanceOf(FrameError);
      }
    }
  };

  it('random bytes: only FrameError, and nothing reaches the TUN that policy would refuse', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 10 }), (chunks) => {
        const { fwd, written } = setup();
        receiveAll(fwd, chunks);
        checkWritten(written);
      }),
      { numRuns: RUNS * 4 },
    );
  }, 60_000);

  it('mutated valid frames (bit flips, cut points, hostile vnet headers): same guarantees', () => {
    let delivered = 0;
    const packet = fc.oneof(
      fc
        .tuple(
          fc.constantFrom('10.2.0.7', '10.9.0.1', '10.1.0.5'),
          fc.constantFrom('10.1.0.5', '10.2.0.9'),
          fc.nat(3000),
        )
        .map(([s, d, n]) => udp4(s, d, n)),
      fc.tuple(fc.constantFrom(1, 2, 9), fc.constantFrom(1, 2), fc.nat(3000)).map(([s, d, n]) => udp6(s, 5, d, 7, n)),
    );
    const vnet = fc.oneof(
      fc.constant(new Uint8Array(10)),
      fc.uint8Array({ minLength: 10, maxLength: 10 }),
      fc.tuple(fc.constantFrom(1, 4, 5, 3, 0x81), fc.nat(200), fc.nat(3000)).map(([type, hdr, gso]) => {
        const v = new Uint8Array(10);
        v[0] = 1;
        v[1] = type;
        v[2] = hdr & 0xff;
        v[4] = gso & 0xff;
        v[5] = gso >> 8;
        v[6] = 20;
        v[8] = 6;
        return v;
      }),
      fc.uint8Array({ maxLength: 70 }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.record({ vnet, data: packet }), { minLength: 1, maxLength: 5 }),
        fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }),
        fc.array(fc.nat(), { maxLength: 3 }),
        (packets, flips, cuts) => {
          const frame = encodeFrame(packets);
          for (const [at, value] of flips) frame[at % frame.length] = value;
          const points = [...new Set(cuts.map((c) => c % frame.length))].sort((a, b) => a - b);
          const chunks: Uint8Array[] = [];
          let from = 0;
          for (const p of points) {
            chunks.push(frame.subarray(from, p));
            from = p;
          }
          chunks.push(frame.subarray(from));
          const { fwd, written } = setup();
          receiveAll(fwd, chunks);
          checkWritten(written);
          delivered += written.length;
        },
      ),
      { numRuns: RUNS * 4 },
    );
    expect(delivered).toBeGreaterThan(RUNS / 10); // valid packets do get through
  }, 60_000);
});

describe('fuzz: CNI inputs', () => {
  const env = fc.dictionary(
    fc.constantFrom('CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH', 'OTHER'),
    fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.constantFrom('ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION', '/var/run/netns/x', 'eth0', 'abc'),
    ),
  );
  const stdin = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.json({ maxDepth: 3 }),
    fc
      .record({
        cniVersion: fc.constantFrom('0.3.1', '0.4.0', '1.0.0', '1.1.0', '9', 1 as unknown as string),
        name: fc.oneof(fc.constant('edgemesh'), fc.string({ maxLength: 10 })),
        type: fc.oneof(fc.constant('edgemesh'), fc.string({ maxLength: 5 })),
        ipam: fc.option(fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 })), { nil: undefined }),
        dns: fc.option(fc.anything({ maxDepth: 2 }), { nil: undefined }),
        prevResult: fc.option(fc.anything({ maxDepth: 2 }), { nil: undefined }),
        'cni.dev/valid-attachments': fc.option(fc.anything({ maxDepth: 2 }), { nil: undefined }),
      })
      .map((o) => JSON.stringify(o)),
  );

  it('environment and network configuration: a CniError with a spec code or a value, never anything else', () => {
    fc.assert(
      fc.property(env, stdin, (e, s) => {
        let command: ReturnType<typeof parseEnv>['command'] = 'ADD';
        try {
          const parsed = parseEnv(e as Record<string, string>);
          command = parsed.command;
          // What an attachment command accepts is safe to splice into ip -batch lines and paths.
          if (['ADD', 'DEL', 'CHECK'].includes(command)) {
            for (const v of [parsed.containerId, parsed.ifname, parsed.netns]) expect(v).not.toMatch(/[\s\p{Cc}]/u);
          }
        } catch (err) {
          expect(err).toBeInstanceOf(CniError);
          expect([4]).toContain((err as CniError).code);
        }
        try {
          parseNetConf(s, command);
        } catch (err) {
          expect(err).toBeInstanceOf(CniError);
          expect([1, 2, 6, 7]).toContain((err as CniError).code);
        }
      }),
      { numRuns: RUNS * 10 },
    );
  }, 60_000);
});

describe('fuzz: punch offers from a peer', () => {
  // What a member may send on /edgemesh/punch/1.0.0: any JSON value, and near-valid offers
  // with one field wrong.
  const nearValid = fc.record({
    v: fc.oneof(fc.constant(1), fc.integer(), fc.string()),
    ip: fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('127.0.0.1', '10.0.0.1', '0.0.0.0', '::1', 'x'), fc.string()),
    port: fc.oneof(fc.integer({ min: -10, max: 70_000 }), fc.double(), fc.string()),
  });

  it('a punch offer is either a public address with a port or a PunchError: nothing else', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), nearValid), (o) => {
        try {
          validateOffer(o);
        } catch (err) {
          expect(err).toBeInstanceOf(PunchError);
          expect((err as PunchError).reason).toBe('bad-message');
          return;
        }
        const offer = o as PunchOffer;
        expect(isPublicIp(offer.ip)).toBe(true);
        expect(Number.isInteger(offer.port) && offer.port >= 1 && offer.port <= 65_535).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('fuzz: a relay answering a binding request', () => {
  it('any reply is a well-formed grant, a release, or a RelayBindingError: never a TypeError', () => {
    const grantish = fc.record({
      v: fc.constant(1),
      bindingId: fc.oneof(fc.integer(), fc.double(), fc.string()),
      member: fc.oneof(fc.constantFrom(0, 1, 2), fc.string()),
      token: fc.oneof(fc.base64String(), fc.constant(Buffer.alloc(32).toString('base64')), fc.integer()),
      port: fc.oneof(fc.integer({ min: -5, max: 70_000 }), fc.string()),
    });
    const bytes = fc.oneof(
      fc.jsonValue().map((v) => new TextEncoder().encode(JSON.stringify(v))),
      grantish.map((v) => new TextEncoder().encode(JSON.stringify(v))),
      fc.uint8Array({ maxLength: 64 }),
    );
    fc.assert(
      fc.property(bytes, (b) => {
        let out: ReturnType<typeof parseReply>;
        try {
          out = parseReply(b, 'peer');
        } catch (err) {
          expect(err).toBeInstanceOf(RelayBindingError);
          return;
        }
        if ('released' in out) return;
        expect(Number.isInteger(out.bindingId) && out.bindingId >= 1).toBe(true);
        expect([0, 1]).toContain(out.member);
        expect(out.token.length).toBe(32);
        expect(out.port >= 1 && out.port <= 65_535).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });
});
