// /edgemesh/udp-relay/1.0.0 over real libp2p hosts (TCP + noise + yamux) on loopback: two
// members get the two sides of one binding from a relay host, and their UdpDataSockets then
// carry a session through the UdpRelay with those grants; a repeated request returns the
// same grant; release ends it; a stranger cannot connect at all, a member that left the
// directory and a request naming a non-member are refused; oversized, garbled and silent
// requests close the stream and are counted.
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { lpStream } from '@libp2p/utils';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Packet } from '../../../dataplane/types.ts';
import { type RelayGrant, relayAllocateDatagram, UdpRelay } from '../../../dataplane/udp-relay.ts';
import { UdpDataSocket } from '../../../dataplane/udp-session.ts';
import { PeerDirectory, peerAnnotations } from '../../../overlay/directory.ts';
import { createHost, type Host } from '../../../overlay/host.ts';
import { RELAY_BINDING_PROTOCOL, RelayBindingService, requestRelayBinding } from '../../../overlay/relay-binding.ts';
import { canonicalIpv6 } from '../../../overlay/udp-relay-path.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// Hosts: 0 = relay, 1 = A, 2 = B, 3 = C (members), 4 = S (a stranger nobody lists).
const NAMES = ['relay', 'a', 'b', 'c', 'stranger'];
let hosts: Host[] = [];
let dirs: PeerDirectory[] = [];
let relay: UdpRelay;
let service: RelayBindingService;
const gate = { denied: {} as Record<string, number> };

function annotate(i: number) {
  const h = hosts[i]!;
  return {
    name: NAMES[i]!,
    annotations: peerAnnotations({
      peerId: h.peerId.toString(),
      multiaddrs: h.getMultiaddrs().map((m) => m.decapsulate('/p2p').toString()),
      podCidrs: [`10.244.${i}.0/24`],
      site: `s${i}`,
      nodeIp: `192.0.2.${i + 1}`, // never contacted
    }),
  };
}

beforeAll(async () => {
  const keys = await Promise.all(NAMES.map(() => generateKeyPair('Ed25519')));
  dirs = NAMES.map(() => new PeerDirectory());
  hosts = await Promise.all(
    keys.map((privateKey, i) =>
      createHost({
        privateKey,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        relay: false,
        directory: dirs[i]!,
        gateCounters: i === 0 ? gate : { denied: {} },
        announceLoopback: true,
      }),
    ),
  );
  // Members 0-3 list each other; the stranger lists everyone, nobody lists it.
  for (let i = 0; i < 4; i++) for (const d of dirs) d.upsertFromNode(annotate(i));
  relay = UdpRelay.open({ bind: '127.0.0.1', port: 0, maxBindingsPerMember: 2 });
  service = new RelayBindingService({
    relay,
    isMember: (p) => dirs[0]!.has(p),
    log: pino({ level: 'silent' }),
    requestTimeoutMs: 1000,
  });
  await hosts[0]!.handle(RELAY_BINDING_PROTOCOL, (s, c) => service.serve(s, c.remotePeer.toString()), {
    runOnLimitedConnection: true,
  });
});

afterAll(async () => {
  relay?.close();
  await Promise.all(hosts.map((h) => h.stop()));
});

const peerOf = (i: number) => hosts[i]!.peerId.toString();
const connTo = (from: number) => hosts[from]!.dial(hosts[0]!.getMultiaddrs()[0]!);

describe('/edgemesh/udp-relay/1.0.0', () => {
  it('gives the two members the two sides of one binding, which then carries their session through the relay', async () => {
    const ga = (await requestRelayBinding(await connTo(1), peerOf(2))) as RelayGrant;
    const gb = (await requestRelayBinding(await connTo(2), peerOf(1))) as RelayGrant;
    expect(ga.bindingId).toBe(gb.bindingId);
    expect(ga.member + gb.member).toBe(1);
    expect(Buffer.from(ga.token).equals(Buffer.from(gb.token))).toBe(false);
    expect(ga.port).toBe(relay.port);
    // asking again returns the same grant (the requester holds that token already)
    const again = (await requestRelayBinding(await connTo(1), peerOf(2))) as RelayGrant;
    expect(again).toEqual(ga);
    expect(relay.stats().bindings).toBe(1);

    // the grants work: A's and B's data sockets register and a session goes through
    const got: Packet[] = [];
    const sa = UdpDataSocket.open({ bind: '127.0.0.1', port: 0, onPackets: () => {}, onControl: () => {} });
    const sb = UdpDataSocket.open({
      bind: '127.0.0.1',
      port: 0,
      coalesce: false,
      onPackets: (_i, p) => got.push(...p.map((x) => ({ vnet: x.vnet, data: x.data.slice() }))),
      onControl: () => {},
    });
    try {
      const at = { ip: '127.0.0.1', port: ga.port };
      const k = randomBytes(32);
      sa.addSession({ localIndex: 1, remoteIndex: 2, txKey: k, rxKey: k }, at);
      sb.addSession({ localIndex: 2, remoteIndex: 1, txKey: k, rxKey: k }, at);
      sa.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, indexes: [2] }));
      sb.sendRelayAllocate(at, relayAllocateDatagram({ ...gb, indexes: [1] }));
      await until('registered', () => relay.binding(ga.bindingId)!.members.every((m) => m.endpoint !== null));
      sa.send(1, [{ vnet: new Uint8Array(10), data: new Uint8Array(100).fill(7) }]);
      await until('B receives', () => got.length === 1);
      expect(got[0]!.data).toEqual(new Uint8Array(100).fill(7));
    } finally {
      sa.close();
      sb.close();
    }
    expect(service.counters.granted).toBe(3);
  });

  it('works over a relay reachable over IPv6 only: grants, registration and the session, replies seen from the relay endpoint', async () => {
    // A second relay node (host 3), its UDP relay on ::1 only.
    const relay6 = UdpRelay.open({ bind: '::1', port: 0 });
    const service6 = new RelayBindingService({
      relay: relay6,
      isMember: (p) => dirs[3]!.has(p),
      log: pino({ level: 'silent' }),
    });
    await hosts[3]!.handle(RELAY_BINDING_PROTOCOL, (st, c) => service6.serve(st, c.remotePeer.toString()), {
      runOnLimitedConnection: true,
    });
    const conn6 = (from: number) => hosts[from]!.dial(hosts[3]!.getMultiaddrs()[0]!);
    const controls: Array<{ from: { ip: string; port: number } }> = [];
    const sa = UdpDataSocket.open({ bind: '::', port: 0, onPackets: () => {}, onControl: () => {} });
    const sb = UdpDataSocket.open({
      bind: '::',
      port: 0,
      onPackets: () => {},
      onControl: (_i, _m, from) => controls.push({ from }),
    });
    try {
      const ga = (await requestRelayBinding(await conn6(1), peerOf(2))) as RelayGrant;
      const gb = (await requestRelayBinding(await conn6(2), peerOf(1))) as RelayGrant;
      expect(ga.bindingId).toBe(gb.bindingId);
      // The endpoint as the member side derives it from a published /ip6 address.
      const at = { ip: canonicalIpv6('0:0:0:0:0:0:0:1')!, port: ga.port };
      const k = randomBytes(32);
      sa.addSession({ localIndex: 1, remoteIndex: 2, txKey: k, rxKey: k }, at);
      sb.addSession({ localIndex: 2, remoteIndex: 1, txKey: k, rxKey: k }, at);
      expect(sa.sendRelayAllocate(at, relayAllocateDatagram({ ...ga, indexes: [2] }))).toBe(true);
      expect(sb.sendRelayAllocate(at, relayAllocateDatagram({ ...gb, indexes: [1] }))).toBe(true);
      await until('registered', () => relay6.binding(ga.bindingId)!.members.every((m) => m.endpoint !== null));
      expect(sa.sendControl(1, new Uint8Array(12).fill(1), at)).toBe(true);
      await until('B hears A through the relay', () => controls.length === 1);
      // What the socket reports as the sender is the relay endpoint, written the same way:
      // the member recognises replies through it as the relay's.
      expect(controls[0]!.from).toEqual(at);
      expect(relay6.stats().txDatagrams).toBeGreaterThanOrEqual(1);
    } finally {
      sa.close();
      sb.close();
      await hosts[3]!.unhandle(RELAY_BINDING_PROTOCOL);
      relay6.close();
    }
  });

  it('release drops the binding for both', async () => {
    const ga = (await requestRelayBinding(await connTo(1), peerOf(3))) as RelayGrant;
    expect(relay.binding(ga.bindingId)).toBeDefined();
    expect(await requestRelayBinding(await connTo(3), peerOf(1), { op: 'release' })).toEqual({ released: true });
    expect(relay.binding(ga.bindingId)).toBeUndefined();
    expect(await requestRelayBinding(await connTo(3), peerOf(1), { op: 'release' })).toEqual({ released: false });
  });

  it('refuses a peer that is not a member, and a stranger cannot even connect', async () => {
    await expect(requestRelayBinding(await connTo(1), peerOf(4))).rejects.toMatchObject({ reason: 'unknown-peer' });
    await expect(requestRelayBinding(await connTo(1), peerOf(1))).rejects.toMatchObject({ reason: 'unknown-peer' });
    expect(service.counters.refused['unknown-peer']).toBe(2);
    const denied = gate.denied['inbound'] ?? 0;
    // the relay's gate closes the stranger's connection (its dial may briefly look open on its side)
    const attempt = await connTo(4)
      .then((c) => requestRelayBinding(c, peerOf(1), { timeoutMs: 3000 }))
      .then(
        () => 'granted',
        () => 'refused',
      );
    expect(attempt).toBe('refused');
    await until('gate counted', () => (gate.denied['inbound'] ?? 0) > denied);
    expect(relay.bindingsOf(peerOf(4))).toEqual([]);
  });

  it('refuses a member that left the directory, on its still-open connection', async () => {
    const conn = await connTo(3);
    dirs[0]!.remove('c');
    try {
      await expect(requestRelayBinding(conn, peerOf(2))).rejects.toMatchObject({ reason: 'not-member' });
      expect(service.counters.refused['not-member']).toBe(1);
    } finally {
      dirs[0]!.upsertFromNode(annotate(3));
    }
  });

  it('answers a cap with its reason, and still hands out existing bindings at the cap', async () => {
    await requestRelayBinding(await connTo(2), peerOf(3)); // B: with A and with C = 2, the cap
    await expect(requestRelayBinding(await connTo(2), peerOf(0))).rejects.toMatchObject({ reason: 'member-full' });
    expect(service.counters.refused['member-full']).toBe(1);
    await expect(requestRelayBinding(await connTo(2), peerOf(1))).resolves.toMatchObject({ port: relay.port });
  });

  it('expires bindings whose members went quiet, and forgets a member that left', async () => {
    const quiet = UdpRelay.open({ bind: '127.0.0.1', port: 0 });
    const svc = new RelayBindingService({
      relay: quiet,
      isMember: () => true,
      log: pino({ level: 'silent' }),
      idleMs: 100,
    });
    try {
      const [g] = quiet.addBinding('x', 'y');
      quiet.addBinding('x', 'z');
      expect(svc.forgetMember('z')).toBe(1);
      svc.start();
      await until('expired', () => svc.counters.expired === 1, 5000);
      expect(quiet.binding(g.bindingId)).toBeUndefined();
      expect(quiet.stats().bindings).toBe(0);
    } finally {
      svc.stop();
      quiet.close();
    }
  });

  it('cuts oversized, garbled and silent requests and counts them', async () => {
    const before = { ...service.counters.refused };
    const conn = await connTo(1);
    // oversized
    const s1 = await conn.newStream(RELAY_BINDING_PROTOCOL);
    await lpStream(s1).write(new Uint8Array(4096).fill(0x61));
    // not JSON
    const s2 = await conn.newStream(RELAY_BINDING_PROTOCOL);
    await lpStream(s2).write(new TextEncoder().encode('{nope'));
    // JSON of the wrong shape
    const s3 = await conn.newStream(RELAY_BINDING_PROTOCOL);
    await lpStream(s3).write(new TextEncoder().encode(JSON.stringify({ v: 1, op: 'bind', peer: 7 })));
    // silent
    await conn.newStream(RELAY_BINDING_PROTOCOL);
    await until('counted', () => (service.counters.refused['bad-message'] ?? 0) - (before['bad-message'] ?? 0) === 3);
    await until('timeout counted', () => (service.counters.refused['timeout'] ?? 0) > (before['timeout'] ?? 0), 5000);
    // the connection itself stays usable for proper requests
    await expect(requestRelayBinding(conn, peerOf(2))).resolves.toMatchObject({ port: relay.port });
  });
});
