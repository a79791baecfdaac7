// The native UDP relay over loopback: two UdpDataSockets whose session goes through a relay
// binding (sealed datagrams forwarded unopened, both ways, GRO trains included); the
// forwarding rule and allocate checks with every refusal counted (stranger, wrong token,
// replayed allocate, another pair's binding, half-open, removed binding, endpoint held by
// another member); NAT rebinding; the per-member rate limit; random datagrams; and the
// ledger's caps.
import { createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { RelayCapError, RelayLedger } from '../../../dataplane/relay-ledger.ts';
import type { Packet } from '../../../dataplane/types.ts';
import { type RelayGrant, relayAllocateDatagram, UdpRelay } from '../../../dataplane/udp-relay.ts';
import { UdpDataSocket, type UdpEndpoint } from '../../../dataplane/udp-session.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

const HOST = '127.0.0.1';
const plain = (data: Uint8Array): Packet => ({ vnet: new Uint8Array(10), data });
const payload = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

function openRelay(extra: Partial<Parameters<typeof UdpRelay.open>[0]> = {}): UdpRelay {
  const r = UdpRelay.open({ bind: HOST, port: 0, ...extra });
  closers.push(() => r.close());
  return r;
}

function member() {
  const got: { index: number; data: Uint8Array[]; from: UdpEndpoint }[] = [];
  const control: Uint8Array[] = [];
  const sock = UdpDataSocket.open({
    bind: HOST,
    port: 0,
    coalesce: false,
    onPackets: (index, batch, from) => got.push({ index, data: batch.map((p) => p.data.slice()), from }),
    onControl: (_i, m) => control.push(m.slice()),
  });
  closers.push(() => sock.close());
  return { sock, got, control, count: () => got.reduce((n, r) => n + r.data.length, 0) };
}

/** A and B with one session (A's index 11 ↔ B's 22) whose endpoint is the relay, and a binding allocated by both. */
async function relayedPair(relay: UdpRelay) {
  const a = member();
  const b = member();
  const kAB = randomBytes(32);
  const kBA = randomBytes(32);
  const at = { ip: HOST, port: relay.port };
  a.sock.addSession({ localIndex: 11, remoteIndex: 22, txKey: kAB, rxKey: kBA }, at);
  b.sock.addSession({ localIndex: 22, remoteIndex: 11, txKey: kBA, rxKey: kAB }, at);
  const [ga, gb] = relay.addBinding('peerA', 'peerB');
  expect(a.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, indexes: [22] }))).toBe(true);
  expect(b.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...gb, indexes: [11] }))).toBe(true);
  await until('both registered', () => relay.binding(ga.bindingId)!.members.every((m) => m.endpoint !== null));
  return { a, b, ga, gb, at, kAB, kBA };
}

async function rawSocket() {
  const raw = dgram.createSocket('udp4');
  closers.push(() => raw.close());
  await new Promise<void>((r) => raw.bind(0, HOST, r));
  return raw;
}

function send(raw: dgram.Socket, msg: Uint8Array, port: number): Promise<void> {
  return new Promise((resolve, reject) => raw.send(msg, port, HOST, (err) => (err ? reject(err) : resolve())));
}

/** A data datagram's shape with the given receiver index (contents garbage: the relay never opens it). */
function fakeData(index: number, len = 100): Buffer {
  const d = randomBytes(len);
  d[0] = 4;
  d[1] = d[2] = d[3] = 0;
  d.writeUInt32LE(index, 4);
  return d;
}

describe('UdpRelay forwarding', () => {
  it('carries sealed packets and control messages A → relay → B and back, unopened, with per-binding counters', async () => {
    const relay = openRelay();
    const { a, b, ga } = await relayedPair(relay);
    const batch = [plain(payload(60, 1)), plain(payload(1300, 2)), plain(payload(1, 3))];
    expect(a.sock.send(11, batch)).toBe(3);
    await until('B receives 3', () => b.count() === 3);
    expect(b.got.flatMap((r) => r.data)).toEqual(batch.map((p) => p.data));
    // B sees the relay as the sender: the relay forwarded, the members never met
    expect(b.got[0]!.from).toEqual({ ip: HOST, port: relay.port });
    expect(b.sock.send(22, [plain(payload(900, 9))])).toBe(1);
    await until('A receives 1', () => a.count() === 1);
    expect(a.sock.sendControl(11, new Uint8Array([1, 2, 3]))).toBe(true);
    await until('B gets the control message', () => b.control.length === 1);
    const info = relay.binding(ga.bindingId)!;
    expect(info.members[0]).toMatchObject({ packets: 4, indexes: [22], allocations: 1, rateDrops: 0 });
    expect(info.members[0].endpoint).toEqual({ ip: HOST, port: a.sock.port });
    expect(info.members[1]).toMatchObject({ packets: 1, indexes: [11] });
    expect(info.members[0].bytes).toBe(60 + 1300 + 1 + 3 + 4 * 32);
    const s = relay.stats();
    expect(s).toMatchObject({ bindings: 1, txDatagrams: 5, drops: {} });
    expect(a.sock.stats().drops).toEqual({});
    expect(b.sock.stats().drops).toEqual({});
  });

  it('forwards a large batch (GRO trains on the relay side) without loss', async () => {
    const relay = openRelay();
    const { a, b } = await relayedPair(relay);
    const batch = Array.from({ length: 300 }, (_, i) => plain(payload(1200, i)));
    for (let i = 0; i < 5; i++) expect(a.sock.send(11, batch)).toBe(300);
    await until('B receives 1500', () => b.count() === 1500);
    const s = relay.stats();
    expect(s.txDatagrams).toBe(1500);
    expect(s.rxBatches).toBeLessThan(1500); // batched: many datagrams per recvmmsg
    expect(s.drops).toEqual({});
  });

  it('drops until both members registered (half-open), then forwards', async () => {
    const relay = openRelay();
    const a = member();
    const b = member();
    const k = randomBytes(32);
    const at = { ip: HOST, port: relay.port };
    a.sock.addSession({ localIndex: 11, remoteIndex: 22, txKey: k, rxKey: k }, at);
    b.sock.addSession({ localIndex: 22, remoteIndex: 11, txKey: k, rxKey: k }, at);
    const [ga, gb] = relay.addBinding('peerA', 'peerB');
    a.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, indexes: [22] }));
    await until('A registered', () => relay.binding(ga.bindingId)!.members[0].endpoint !== null);
    a.sock.send(11, [plain(payload(100, 1)), plain(payload(100, 2))]);
    await until('half-open counted', () => relay.stats().drops['half-open'] === 2);
    expect(relay.binding(ga.bindingId)!.members[0].halfOpenDrops).toBe(2);
    b.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...gb, indexes: [11] }));
    await until('B registered', () => relay.binding(ga.bindingId)!.members[1].endpoint !== null);
    a.sock.send(11, [plain(payload(100, 3))]);
    await until('B receives', () => b.count() === 1);
  });

  it('refuses strangers, wrong tokens, replayed allocates and datagrams from unregistered sources, counting each', async () => {
    const relay = openRelay();
    const { a, b, ga, gb, at } = await relayedPair(relay);
    const stranger = await rawSocket();
    // a stranger's datagrams for A's and B's indexes: unknown source, never forwarded
    await send(stranger, fakeData(22), relay.port);
    await send(stranger, fakeData(11), relay.port);
    // a stranger's allocate: for no binding, and for a real binding with a guessed token
    await send(
      stranger,
      relayAllocateDatagram({ token: randomBytes(32), bindingId: (ga.bindingId ^ 1) >>> 0, member: 0, indexes: [22] }),
      relay.port,
    );
    await send(stranger, relayAllocateDatagram({ ...ga, token: randomBytes(32), indexes: [22] }), relay.port);
    // B's token claiming A's side (a member cannot take the other's place)
    await send(stranger, relayAllocateDatagram({ ...gb, member: 0, indexes: [22] }), relay.port);
    // A's allocate captured and replayed from elsewhere: stale counter
    const captured = relayAllocateDatagram({ ...ga, indexes: [22] });
    a.sock.sendRelayAllocate(at, captured);
    await until('A re-registered', () => relay.binding(ga.bindingId)!.members[0].allocations === 2);
    await send(stranger, captured, relay.port);
    // garbage: short, bad type, malformed allocate
    await send(stranger, new Uint8Array([4, 0]), relay.port);
    await send(stranger, new Uint8Array(40).fill(9), relay.port);
    await send(stranger, Uint8Array.of(6, 0, 9, ...new Uint8Array(61)), relay.port);
    await until('all counted', () => Object.values(relay.stats().drops).reduce((x, y) => x + y, 0) === 9);
    expect(relay.stats().drops).toEqual({
      'unknown-source': 2,
      'no-binding': 1,
      'auth-failed': 2,
      'stale-allocate': 1,
      short: 1,
      'bad-type': 1,
      'bad-allocate': 1,
    });
    // A's endpoint never moved to the stranger; traffic still flows and nothing reached B
    expect(relay.binding(ga.bindingId)!.members[0].endpoint).toEqual({ ip: HOST, port: a.sock.port });
    expect(b.sock.stats().rxDatagrams).toBe(0);
    a.sock.send(11, [plain(payload(10, 1))]);
    await until('B receives', () => b.count() === 1);
  });

  it("a member of one binding cannot inject into or read another pair's binding", async () => {
    const relay = openRelay();
    const { b, ga } = await relayedPair(relay);
    // C has its own binding with B (pair B–C) and knows A's session index 11 and B's 22
    const c = member();
    const [gc] = relay.addBinding('peerC', 'peerB');
    const at = { ip: HOST, port: relay.port };
    const kc = randomBytes(32);
    c.sock.addSession({ localIndex: 33, remoteIndex: 22, txKey: kc, rxKey: kc }, at);
    // C registers index 22 (B's A-session) under its own binding: B never registered there
    c.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...gc, indexes: [22] }));
    await until('C registered', () => relay.binding(gc.bindingId)!.members[0].endpoint !== null);
    c.sock.send(33, [plain(payload(100, 1))]);
    await until('half-open', () => relay.stats().drops['half-open'] === 1);
    // C signs with its token for A's binding: refused
    c.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, token: gc.token, indexes: [22] }));
    await until('auth-failed', () => relay.stats().drops['auth-failed'] === 1);
    expect(b.sock.stats().rxDatagrams).toBe(0);
    expect(c.sock.stats().rxDatagrams).toBe(0); // C never receives A↔B traffic
    expect(relay.binding(ga.bindingId)!.members[0].endpoint!.port).not.toBe(c.sock.port);
  });

  it('refuses an endpoint+index a live member holds (endpoint-taken)', async () => {
    const relay = openRelay();
    const { a, ga, at } = await relayedPair(relay);
    // A second binding of A's (same socket, same receiver index 22) is refused while the first is live
    const [g2] = relay.addBinding('peerA', 'peerX');
    a.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...g2, indexes: [22] }));
    await until('endpoint-taken', () => relay.stats().drops['endpoint-taken'] === 1);
    expect(relay.binding(g2.bindingId)!.members[0].endpoint).toBeNull();
    // another index on the same socket is fine (one socket, sessions to several peers)
    a.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...g2, indexes: [44] }));
    await until('registered', () => relay.binding(g2.bindingId)!.members[0].endpoint !== null);
    expect(relay.binding(ga.bindingId)!.members[0].indexes).toEqual([22]);
  });

  it('moves a member to its new endpoint on re-registration (NAT rebinding)', async () => {
    const relay = openRelay();
    const { a, b, ga, at, kAB, kBA } = await relayedPair(relay);
    a.sock.send(11, [plain(payload(100, 1))]);
    await until('B receives', () => b.count() === 1);
    // A's socket is replaced by one on another port (as a NAT rebinding looks to the relay)
    const a2 = member();
    a2.sock.addSession({ localIndex: 11, remoteIndex: 22, txKey: kAB, rxKey: kBA }, at);
    a2.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, indexes: [22] }));
    await until('moved', () => relay.binding(ga.bindingId)!.members[0].endpoint!.port === a2.sock.port);
    expect(b.sock.send(22, [plain(payload(100, 2))])).toBe(1);
    await until('A2 receives', () => a2.count() === 1);
    expect(a.count()).toBe(0);
    // the old endpoint is no longer a source
    expect(a.sock.send(11, [plain(payload(100, 3))])).toBe(1);
    await until('unknown-source', () => relay.stats().drops['unknown-source'] === 1);
  });

  it('limits each member to its packet rate and counts the excess', async () => {
    const relay = openRelay({ packetsPerSecond: 100, burstSeconds: 0.1 });
    const { a, b, ga } = await relayedPair(relay);
    const batch = Array.from({ length: 200 }, (_, i) => plain(payload(200, i)));
    for (let i = 0; i < 10; i++) a.sock.send(11, batch); // 2000 datagrams at once, a bucket of 64
    await until('settled', () => {
      const m = relay.binding(ga.bindingId)!.members[0];
      return m.packets + m.rateDrops === 2000;
    });
    const m = relay.binding(ga.bindingId)!.members[0];
    // the bucket plus 100/s of refill while they arrive (seconds even on a loaded machine)
    expect(m.rateDrops).toBeGreaterThan(500);
    expect(m.packets).toBeGreaterThanOrEqual(64);
    expect(m.packets).toBeLessThan(1500);
    expect(relay.stats().drops['rate-limited']).toBe(m.rateDrops);
    await until('B got the forwarded ones', () => b.count() === m.packets);
  });

  it('forgets a removed binding: its datagrams and allocates are refused', async () => {
    const relay = openRelay();
    const { a, ga, at } = await relayedPair(relay);
    expect(relay.removeBinding(ga.bindingId)).toBe(true);
    expect(relay.binding(ga.bindingId)).toBeUndefined();
    a.sock.send(11, [plain(payload(100, 1))]);
    a.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, indexes: [22] }));
    await until(
      'refused',
      () => relay.stats().drops['no-binding'] === 1 && relay.stats().drops['unknown-source'] === 1,
    );
    expect(relay.stats().bindings).toBe(0);
  });

  it('survives random datagrams and accepts an allocate built independently with node:crypto', async () => {
    const relay = openRelay();
    const { b, ga, gb } = await relayedPair(relay);
    const raw = await rawSocket();
    for (let i = 0; i < 500; i++) {
      const d = randomBytes(1 + (i % 200));
      if (i % 3 === 0) d[0] = 6;
      if (i % 3 === 1) d[0] = 4;
      await send(raw, d, relay.port);
    }
    await until('all seen', () => relay.stats().rxDatagrams >= 500 + 2);
    expect(relay.stats().txDatagrams).toBe(0);
    expect(b.sock.stats().rxDatagrams).toBe(0);
    // the allocate layout, written from the documentation: B's side from the raw socket
    const d = Buffer.alloc(64);
    d[0] = 6;
    d[1] = 1;
    d[2] = 1;
    d.writeUInt32LE(gb.bindingId, 4);
    d.writeBigUInt64LE(BigInt(Date.now()) * 1000n + 999_999n, 8);
    d.writeUInt32LE(11, 16);
    createHmac('sha256', gb.token).update(d.subarray(0, 32)).digest().copy(d, 32);
    await send(raw, d, relay.port);
    const rawPort = raw.address().port;
    await until('B moved to the raw socket', () => relay.binding(ga.bindingId)!.members[1].endpoint!.port === rawPort);
  });

  it('keeps apart two bindings that share one member socket (different receiver indexes)', async () => {
    const relay = openRelay();
    const { a, b, at } = await relayedPair(relay);
    const c = member();
    const k = randomBytes(32);
    a.sock.addSession({ localIndex: 12, remoteIndex: 33, txKey: k, rxKey: k }, at);
    c.sock.addSession({ localIndex: 33, remoteIndex: 12, txKey: k, rxKey: k }, at);
    const [gA, gC] = relay.addBinding('peerA', 'peerC');
    a.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...gA, indexes: [33] }));
    c.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...gC, indexes: [12] }));
    await until('both', () => relay.binding(gA.bindingId)!.members.every((m) => m.endpoint !== null));
    a.sock.send(11, [plain(payload(100, 1))]);
    a.sock.send(12, [plain(payload(100, 2)), plain(payload(100, 3))]);
    await until('B 1, C 2', () => b.count() === 1 && c.count() === 2);
    expect(c.got[0]!.index).toBe(33);
    expect(relay.stats().drops).toEqual({});
  });

  it('relays over IPv6 on a dual-stack relay socket', async () => {
    const relay = UdpRelay.open({ bind: '::', port: 0 });
    closers.push(() => relay.close());
    const mk = () => {
      const got: Uint8Array[] = [];
      const sock = UdpDataSocket.open({
        bind: '::1',
        port: 0,
        coalesce: false,
        onPackets: (_i, batch) => got.push(...batch.map((p) => p.data.slice())),
        onControl: () => {},
      });
      closers.push(() => sock.close());
      return { sock, got };
    };
    const a = mk();
    const b = mk();
    const k = randomBytes(32);
    const at = { ip: '::1', port: relay.port };
    a.sock.addSession({ localIndex: 1, remoteIndex: 2, txKey: k, rxKey: k }, at);
    b.sock.addSession({ localIndex: 2, remoteIndex: 1, txKey: k, rxKey: k }, at);
    const [ga, gb] = relay.addBinding('a', 'b');
    a.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, indexes: [2] }));
    b.sock.sendRelayAllocate(at, relayAllocateDatagram({ ...gb, indexes: [1] }));
    await until('registered', () => relay.binding(ga.bindingId)!.members.every((m) => m.endpoint !== null));
    expect(relay.binding(ga.bindingId)!.members[0].endpoint).toEqual({ ip: '::1', port: a.sock.port });
    a.sock.send(1, [plain(payload(700, 5))]);
    await until('B receives', () => b.got.length === 1);
    expect(b.got[0]).toEqual(payload(700, 5));
  });

  it('checks its arguments', () => {
    expect(() => UdpRelay.open({ bind: 'nope', port: 0 })).toThrow(/bind/);
    expect(() => UdpRelay.open({ bind: HOST, port: 70000 })).toThrow(/port/);
    expect(() => openRelay({ packetsPerSecond: -1 })).toThrow(/packetsPerSecond/);
    const grant: RelayGrant = { bindingId: 1, member: 0, token: new Uint8Array(31), port: 1, peer: 'x' };
    expect(() => relayAllocateDatagram({ ...grant, indexes: [1] })).toThrow(/token/);
    expect(() => relayAllocateDatagram({ ...grant, token: new Uint8Array(32), indexes: [1, 2, 3, 4, 5] })).toThrow(/4/);
    const s = member();
    expect(() => s.sock.sendRelayAllocate({ ip: HOST, port: 9 }, new Uint8Array(64))).toThrow(/allocate/);
  });
});

describe('RelayLedger', () => {
  it('caps bindings in all and per member, and frees the slots on removal', () => {
    const l = new RelayLedger({ maxBindings: 3, maxBindingsPerMember: 2 });
    const ab = l.create('a', 'b');
    l.create('a', 'c');
    expect(() => l.create('a', 'd')).toThrow(RelayCapError);
    try {
      l.create('a', 'd');
    } catch (e) {
      expect((e as RelayCapError).code).toBe('member-full');
    }
    l.create('b', 'c');
    expect(() => l.create('d', 'e')).toThrow(/holds 3/);
    expect(l.find('b', 'a')).toBe(ab);
    const token = ab.tokens[0];
    expect(l.remove(ab.id)).toBe(true);
    expect(token.every((x) => x === 0)).toBe(true); // wiped
    expect(l.bindingsOf('a')).toHaveLength(1);
    expect(l.create('a', 'd').members).toEqual(['a', 'd']);
    expect(() => l.create('x', 'x')).toThrow(/two different/);
  });

  it('gives unguessable ids and distinct 32-byte tokens per member', () => {
    const l = new RelayLedger({ maxBindings: 100, maxBindingsPerMember: 100 });
    const xs = Array.from({ length: 50 }, (_, i) => l.create('a', `p${i}`));
    expect(new Set(xs.map((x) => x.id)).size).toBe(50);
    const tokens = new Set(xs.flatMap((x) => x.tokens.map((t) => Buffer.from(t).toString('hex'))));
    expect(tokens.size).toBe(100);
    expect(xs[0]!.tokens[0]).toHaveLength(32);
  });

  it('refuses bad limits', () => {
    expect(() => new RelayLedger({ maxBindings: 0, maxBindingsPerMember: 1 })).toThrow(/maxBindings/);
  });
});
