// Reflection (overlay/reflection.ts) and NAT classification (overlay/nat-kind.ts) over an
// in-memory network of data-socket doubles: sealing is the native socket's job (a datagram
// outside a session never reaches JS, shown in test/integration/overlay/reflection.test.ts);
// here: the wire codec, which mapping a member learns from two reflectors, how it classifies
// its NAT, that a reflector rate-limits each member and a non-public node reflects nothing.
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { classifyNat, offerableMappings } from '../../../overlay/nat-kind.ts';
import {
  decodeBinding,
  encodeBindingAnswer,
  encodeBindingRequest,
  isBindingMessage,
  NatReflection,
} from '../../../overlay/reflection.ts';
import { encodeControl } from '../../../overlay/udp-paths.ts';
import type { DataSocketLike, UdpEndpoint } from '../../../overlay/udp-types.ts';

const nonce = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);

describe('binding message codec', () => {
  it('round-trips requests and IPv4/IPv6 answers', () => {
    expect(decodeBinding(encodeBindingRequest(nonce))).toEqual({ type: 'request', nonce });
    for (const mapped of [
      { ip: '203.0.113.101', port: 40_001 },
      { ip: '2001:db8::7', port: 1 },
    ]) {
      expect(decodeBinding(encodeBindingAnswer(nonce, mapped))).toEqual({ type: 'answer', nonce, mapped });
    }
  });

  it('refuses malformed messages and leaves the prober its own', () => {
    const answer = encodeBindingAnswer(nonce, { ip: '198.51.100.7', port: 5000 });
    expect(decodeBinding(answer.subarray(0, answer.length - 1))).toBeUndefined();
    const badFamily = answer.slice();
    badFamily[12] = 9;
    expect(decodeBinding(badFamily)).toBeUndefined();
    const portZero = answer.slice();
    portZero[13] = 0;
    portZero[14] = 0;
    expect(decodeBinding(portZero)).toBeUndefined();
    const longRequest = new Uint8Array(13);
    longRequest.set(encodeBindingRequest(nonce));
    expect(decodeBinding(longRequest)).toBeUndefined();
    // The prober's probes and keepalives are not binding messages.
    for (let t = 1; t <= 4; t++) expect(isBindingMessage(encodeControl(t as 1, nonce))).toBe(false);
    expect(isBindingMessage(encodeBindingRequest(nonce))).toBe(true);
  });
});

describe('classifyNat', () => {
  const self = { public: false, port: 24_000, localIps: new Set(['192.168.10.11']) };
  const r = (reflector: string, ip: string, port: number) => ({ reflector, mapped: { ip, port }, at: 0 });

  it('tells public, endpoint-independent, endpoint-dependent and unknown apart', () => {
    expect(classifyNat({ ...self, public: true }, [])).toBe('none');
    expect(classifyNat(self, [])).toBe('unknown');
    // A reflector saw our own address and port: no NAT in between.
    expect(classifyNat({ ...self, localIps: new Set(['198.51.100.5']) }, [r('c1', '198.51.100.5', 24_000)])).toBe(
      'none',
    );
    // One reflector cannot tell the two NAT kinds apart.
    expect(classifyNat(self, [r('c1', '203.0.113.101', 40_001)])).toBe('unknown');
    expect(classifyNat(self, [r('c1', '203.0.113.101', 40_001), r('c2', '203.0.113.101', 40_001)])).toBe(
      'endpoint-independent',
    );
    expect(classifyNat(self, [r('c1', '203.0.113.101', 40_001), r('c2', '203.0.113.101', 51_234)])).toBe(
      'endpoint-dependent',
    );
  });

  it('offers the mapping unless it depends on the destination', () => {
    const same = [r('c1', '203.0.113.101', 40_001), r('c2', '203.0.113.101', 40_001)];
    expect(offerableMappings('endpoint-independent', same)).toEqual([{ ip: '203.0.113.101', port: 40_001 }]);
    expect(offerableMappings('endpoint-dependent', [r('c1', '203.0.113.101', 1), r('c2', '203.0.113.101', 2)])).toEqual(
      [],
    );
  });
});

// --- an in-memory network: each node has one socket; a NAT rewrites the source per destination.

const key = (e: UdpEndpoint) => `${e.ip}:${e.port}`;

class Net {
  readonly nodes = new Map<string, Member>();
  readonly byAddress = new Map<string, Member>();
  /** One session index per pair of nodes. */
  readonly indexes = new Map<string, number>();
}

class Member implements DataSocketLike {
  readonly port: number;
  reflection!: NatReflection;
  /** Our index on the peer's socket, per peer node (sessions are symmetric here: one index per pair). */
  readonly sessions = new Map<number, string>();
  sent = 0;
  readonly net: Net;
  readonly node: string;
  readonly address: UdpEndpoint;
  /** What a destination sees as our source (our NAT). */
  readonly mapping: (to: UdpEndpoint) => UdpEndpoint;
  constructor(net: Net, node: string, address: UdpEndpoint, mapping: (to: UdpEndpoint) => UdpEndpoint) {
    this.net = net;
    this.node = node;
    this.address = address;
    this.mapping = mapping;
    this.port = address.port;
    net.nodes.set(node, this);
    net.byAddress.set(key(address), this);
  }
  addSession(): void {}
  setEndpoint(): void {}
  removeSession(): void {}
  send(): number {
    return 0;
  }
  session() {
    return undefined;
  }
  sendControl(localIndex: number, message: Uint8Array, to?: UdpEndpoint): boolean {
    const peerNode = this.sessions.get(localIndex);
    const dest = to === undefined ? undefined : this.net.byAddress.get(key(to));
    if (peerNode === undefined || dest === undefined || dest.node !== peerNode) return false;
    this.sent++;
    const copy = message.slice();
    const from = this.mapping(to!);
    // The NAT's mapping carries answers back to us.
    this.net.byAddress.set(key(from), this);
    setTimeout(() => dest.reflection.onMessage(localIndex, copy, from), 1);
    return true;
  }
}

const silent = pino({ level: 'silent' });
const made: NatReflection[] = [];
afterEach(() => {
  for (const r of made.splice(0)) r.stop();
});

/** Wires a member's reflection: sessions are index = a hash of the pair, one per peer. */
function reflect(
  m: Member,
  opts: { public: boolean; reflectors?: string[]; requestsPerWindow?: number; onChange?: () => void },
): NatReflection {
  const indexOf = (x: string, y: string) => {
    const pair = [x, y].sort().join('|');
    if (!m.net.indexes.has(pair)) m.net.indexes.set(pair, m.net.indexes.size + 1);
    return m.net.indexes.get(pair)!;
  };
  for (const other of m.net.nodes.values())
    if (other !== m) {
      const idx = indexOf(m.node, other.node);
      m.sessions.set(idx, other.node);
      other.sessions.set(idx, m.node);
    }
  const r = new NatReflection({
    socket: m,
    nodeOf: (i) => m.sessions.get(i),
    selfPublic: () => opts.public,
    reflectors: () => opts.reflectors ?? [],
    ensureSession: async () => undefined,
    txIndexOf: (node) => [...m.sessions].find(([, n]) => n === node)?.[0],
    targetsOf: (node) => [m.net.nodes.get(node)!.address],
    localIps: () => new Set([m.address.ip]),
    onChange: opts.onChange ?? (() => {}),
    log: silent,
    answerTimeoutMs: 1000,
    ...(opts.requestsPerWindow === undefined ? {} : { requestsPerWindow: opts.requestsPerWindow }),
  });
  m.reflection = r;
  made.push(r);
  return r;
}

function cluster(mapping: (to: UdpEndpoint) => UdpEndpoint) {
  const net = new Net();
  const c1 = new Member(net, 'c1', { ip: '203.0.113.10', port: 21_000 }, (_) => ({ ip: '203.0.113.10', port: 21_000 }));
  const c2 = new Member(net, 'c2', { ip: '203.0.113.11', port: 22_000 }, (_) => ({ ip: '203.0.113.11', port: 22_000 }));
  const a = new Member(net, 'a', { ip: '192.168.10.11', port: 24_000 }, mapping);
  return { net, c1, c2, a };
}

describe('NatReflection', () => {
  it('an endpoint-independent NAT: both reflectors see one mapping, offered as a candidate', async () => {
    const { c1, c2, a } = cluster(() => ({ ip: '203.0.113.101', port: 40_001 }));
    const r1 = reflect(c1, { public: true });
    const r2 = reflect(c2, { public: true });
    let changes = 0;
    const ra = reflect(a, { public: false, reflectors: ['c1', 'c2'], onChange: () => changes++ });
    await ra.refresh();
    expect(ra.kind).toBe('endpoint-independent');
    expect(ra.candidates()).toEqual([{ ip: '203.0.113.101', port: 40_001 }]);
    expect(ra.counters.answers).toBe(2);
    expect(r1.counters.answered + r2.counters.answered).toBeGreaterThanOrEqual(2);
    expect(changes).toBe(1);
    // Same answer again: no change, no new attempts with peers.
    await ra.refresh();
    expect(changes).toBe(1);
    expect(r1.kind).toBe('none');
  });

  it('an endpoint-dependent NAT: reflectors see different ports, nothing offered', async () => {
    const { c1, c2, a } = cluster((to) => ({ ip: '203.0.113.101', port: to.port === 21_000 ? 50_100 : 50_200 }));
    reflect(c1, { public: true });
    reflect(c2, { public: true });
    const ra = reflect(a, { public: false, reflectors: ['c1', 'c2'] });
    await ra.refresh();
    expect(ra.kind).toBe('endpoint-dependent');
    expect(
      ra
        .reflections()
        .map((x) => x.mapped.port)
        .sort(),
    ).toEqual([50_100, 50_200]);
    expect(ra.candidates()).toEqual([]);
  });

  it('a mapping that changes is reported again (a new attempt with peers)', async () => {
    let port = 40_001;
    const { c1, c2, a } = cluster(() => ({ ip: '203.0.113.101', port }));
    reflect(c1, { public: true });
    reflect(c2, { public: true });
    const seen: number[] = [];
    const ra = reflect(a, {
      public: false,
      reflectors: ['c1', 'c2'],
      onChange: () => seen.push(ra.candidates()[0]!.port),
    });
    await ra.refresh();
    port = 40_777;
    await ra.refresh();
    expect(seen).toEqual([40_001, 40_777]);
    expect(ra.counters.mappingChanges).toBe(2);
  });

  it('a reflector answers each member at most its limit per window and counts the rest', async () => {
    const { c1, a } = cluster(() => ({ ip: '203.0.113.101', port: 40_001 }));
    const r1 = reflect(c1, { public: true, requestsPerWindow: 3 });
    reflect(a, { public: false, reflectors: ['c1'] });
    const idx = [...a.sessions].find(([, n]) => n === 'c1')![0];
    for (let i = 0; i < 10; i++)
      a.sendControl(idx, encodeBindingRequest(Uint8Array.of(i, 0, 0, 0, 0, 0, 0, 0)), c1.address);
    await new Promise((r) => setTimeout(r, 30));
    expect(r1.counters.answered).toBe(3);
    expect(r1.counters.rateLimited).toBe(7);
  });

  it('a node without a public address reflects nothing; unsolicited answers and garbage are counted', async () => {
    const { c1, a } = cluster(() => ({ ip: '203.0.113.101', port: 40_001 }));
    const notPublic = reflect(c1, { public: false });
    const ra = reflect(a, { public: false, reflectors: ['c1'] });
    await ra.refresh();
    expect(notPublic.counters.refusedNotPublic).toBeGreaterThan(0);
    expect(notPublic.counters.answered).toBe(0);
    expect(ra.kind).toBe('unknown');
    expect(ra.candidates()).toEqual([]);
    const idx = [...a.sessions].find(([, n]) => n === 'c1')![0];
    ra.onMessage(idx, encodeBindingAnswer(nonce, { ip: '198.51.100.1', port: 9 }), c1.address);
    ra.onMessage(idx, Uint8Array.of(0x45, 0x4d, 1, 6, 0), c1.address);
    ra.onMessage(999_999, encodeBindingRequest(nonce), c1.address);
    expect(ra.counters.bad).toBe(3);
    expect(ra.candidates()).toEqual([]);
  });
});
