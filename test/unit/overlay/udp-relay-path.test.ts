// The member side of the udp-relayed rung (overlay/udp-relay-path.ts): which relays a pair
// uses (the same on both sides), the relay port annotation, when bindings are asked for, what
// the allocate datagrams list, and the hysteresis that moves a session back to direct.
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Connection } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { pino } from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Packet } from '../../../dataplane/types.ts';
import { Labels } from '../../../overlay/annotations.ts';
import { type NodeLike, PeerDirectory, parsePeerInfo, peerAnnotations } from '../../../overlay/directory.ts';
import type { NatKind } from '../../../overlay/nat-kind.ts';
import { parseRelayPort, RELAY_PORT_ANNOTATION } from '../../../overlay/relay-annotations.ts';
import type { RelayGrant } from '../../../overlay/relay-binding.ts';
import { UdpPaths } from '../../../overlay/udp-paths.ts';
import {
  canonicalIpv6,
  chooseRelays,
  DEFAULT_RELAY_CHOICE,
  DIRECT_ANSWERS_TO_LEAVE_RELAY,
  pickRelayEndpoint,
  pushIndex,
  type RelayAllocateArgs,
  type RelayRtt,
  smoothRtt,
  UdpRelayPath,
} from '../../../overlay/udp-relay-path.ts';
import type { ActiveSession } from '../../../overlay/udp-sessions.ts';
import type { DataSocketLike, SessionKeys, UdpEndpoint } from '../../../overlay/udp-types.ts';

let ids: string[] = [];
beforeAll(async () => {
  ids = await Promise.all(
    [1, 2, 3, 4, 5].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()),
  );
});

function node(
  name: string,
  peerId: string,
  opts: { relay?: boolean; relayPort?: number | string; ip?: string } = {},
): NodeLike {
  const ips = (opts.ip ?? '203.0.113.7').split(',');
  return {
    name,
    labels: opts.relay ? { [Labels.relay]: 'true' } : {},
    annotations: {
      ...peerAnnotations({
        peerId,
        multiaddrs: ips.map((ip) => `/${ip.includes(':') ? 'ip6' : 'ip4'}/${ip}/tcp/4001`),
        podCidrs: [],
        site: name,
        nodeIp: '10.1.0.2',
      }),
      ...(opts.relayPort === undefined ? {} : { [RELAY_PORT_ANNOTATION]: String(opts.relayPort) }),
    },
  };
}

function directory(nodes: NodeLike[]): PeerDirectory {
  const dir = new PeerDirectory();
  for (const n of nodes) {
    const r = dir.upsertFromNode(n);
    if (!r.ok) throw new Error(r.reason);
  }
  return dir;
}

describe('the relay port annotation', () => {
  it.each(['0', '65536', '-1', 'abc', '4003x', ' 4003', '1e3', '99999999'])(
    'refuses %j (the node is refused)',
    (text) => {
      expect('error' in parseRelayPort(text)).toBe(true);
      const r = parsePeerInfo(node('r', ids[0]!, { relay: true, relayPort: text }));
      expect(r.ok).toBe(false);
      expect((r as { reason: string }).reason).toMatch(/udp-relay-port/);
    },
  );

  it('keeps a relay node port and ignores one published without the relay label', () => {
    const relay = parsePeerInfo(node('r', ids[0]!, { relay: true, relayPort: 4003 }));
    expect(relay.ok && relay.peer.relayPort).toBe(4003);
    const claim = parsePeerInfo(node('e', ids[1]!, { relayPort: 4003 }));
    expect(claim.ok).toBe(true);
    expect(claim.ok && claim.peer.relayPort).toBeUndefined();
    expect(parseRelayPort(undefined)).toEqual({ port: undefined });
    expect(parseRelayPort('65535')).toEqual({ port: 65535 });
  });
});

describe('chooseRelays', () => {
  it('gives both members the same relays: relay nodes with a UDP port and a public IPv4, by peer ID', () => {
    const [a, b, r1, r2, r3] = ids as [string, string, string, string, string];
    const dir = directory([
      node('a', a),
      node('b', b),
      node('r1', r1, { relay: true, relayPort: 4003, ip: '198.51.100.1' }),
      node('r2', r2, { relay: true, relayPort: 5003, ip: '198.51.100.2' }),
      // A relay without a UDP relay (stream only) is no candidate.
      node('r3', r3, { relay: true, ip: '198.51.100.3' }),
    ]);
    const fromA = chooseRelays(dir.relays(), a, b, 5);
    const fromB = chooseRelays(dir.relays(), b, a, 5);
    expect(fromA).toEqual(fromB);
    expect(fromA.map((r) => r.node).sort()).toEqual(['r1', 'r2']);
    expect([...fromA.map((r) => r.peerId)]).toEqual([r1, r2].sort());
    expect(fromA.find((r) => r.node === 'r2')?.endpoint).toEqual({ ip: '198.51.100.2', port: 5003 });
    expect(chooseRelays(dir.relays(), a, b, 1)).toEqual(fromA.slice(0, 1));
  });

  it('reaches a relay over IPv6 when it publishes no public IPv4, in the form the socket reports senders', () => {
    const [a, b, r1, r2] = ids as [string, string, string, string];
    const dir = directory([
      node('r1', r1, { relay: true, relayPort: 4003, ip: '2001:DB8:0:0:0:0:0:10' }),
      node('r2', r2, { relay: true, relayPort: 4003, ip: '2001:db8::20,198.51.100.2' }),
    ]);
    const relays = chooseRelays(dir.relays(), a, b, 5);
    expect(relays.find((r) => r.node === 'r1')?.endpoint).toEqual({ ip: '2001:db8::10', port: 4003 });
    // Both families: IPv4 first.
    expect(relays.find((r) => r.node === 'r2')?.endpoint).toEqual({ ip: '198.51.100.2', port: 4003 });
    expect(canonicalIpv6('2001:0DB8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
    expect(canonicalIpv6('not an address')).toBeUndefined();
  });

  it('never uses a member of the pair as its relay', () => {
    const [a, r1] = ids as [string, string];
    const dir = directory([node('a', a), node('r1', r1, { relay: true, relayPort: 4003 })]);
    expect(chooseRelays(dir.relays(), a, r1)).toEqual([]);
    expect(chooseRelays(dir.relays(), r1, a)).toEqual([]);
  });
});

describe('pushIndex', () => {
  it('lists the newest index first, each once, at most three', () => {
    expect(pushIndex([], 7)).toEqual([7]);
    expect(pushIndex([7], 9)).toEqual([9, 7]);
    expect(pushIndex([9, 7], 9)).toEqual([9, 7]);
    expect(pushIndex([3, 2, 1], 4)).toEqual([4, 3, 2]);
  });
});

describe('pickRelayEndpoint (which relay a session sends through)', () => {
  const t = DEFAULT_RELAY_CHOICE;
  const now = 1_000_000;
  const seen = (entries: Record<string, [rttMs: number, ageMs: number]>) =>
    new Map<string, RelayRtt>(
      Object.entries(entries).map(([k, [rttMs, age]]) => [k, { rttMs, lastReplyAt: now - age }]),
    );
  const longAgo = now - t.minDwellMs - 1;

  it('starts on the fastest relay that answers', () => {
    expect(pickRelayEndpoint(undefined, 0, seen({ r1: [9, 100], r2: [3, 100], r3: [1, t.silentMs + 1] }), now)).toBe(
      'r2',
    );
    expect(pickRelayEndpoint(undefined, 0, seen({}), now)).toBeUndefined();
  });

  it('stays unless another is faster by the margin (a fraction of the RTT and at least a ms)', () => {
    // 20 % faster: within the hysteresis.
    expect(pickRelayEndpoint('r1', longAgo, seen({ r1: [10, 100], r2: [8, 100] }), now)).toBe('r1');
    // 30 % faster: moves.
    expect(pickRelayEndpoint('r1', longAgo, seen({ r1: [10, 100], r2: [7, 100] }), now)).toBe('r2');
    // Half as fast but only 0.4 ms apart: noise on a LAN.
    expect(pickRelayEndpoint('r1', longAgo, seen({ r1: [0.8, 100], r2: [0.4, 100] }), now)).toBe('r1');
  });

  it('does not move for speed within the dwell time, but fails over at once from a silent relay', () => {
    const recent = now - t.minDwellMs + 1000;
    expect(pickRelayEndpoint('r1', recent, seen({ r1: [10, 100], r2: [2, 100] }), now)).toBe('r1');
    expect(pickRelayEndpoint('r1', recent, seen({ r1: [1, t.silentMs + 1], r2: [20, 100] }), now)).toBe('r2');
  });

  it('keeps a silent relay when no other answers (liveness decides then)', () => {
    expect(pickRelayEndpoint('r1', longAgo, seen({ r1: [1, 60_000], r2: [1, 60_000] }), now)).toBe('r1');
  });

  it('smooths RTT samples (a single slow reply does not move the path)', () => {
    let rtt = smoothRtt(undefined, 4);
    expect(rtt).toBe(4);
    rtt = smoothRtt(rtt, 40);
    expect(rtt).toBe(13);
    for (let i = 0; i < 20; i++) rtt = smoothRtt(rtt, 4);
    expect(rtt).toBeCloseTo(4, 1);
  });
});

describe('UdpRelayPath', () => {
  function setup() {
    const [a, b, r1] = ids as [string, string, string];
    const dir = directory([node('b', b), node('r1', r1, { relay: true, relayPort: 4003, ip: '198.51.100.1' })]);
    const requests: Array<{ relay: string; peer: string; op?: string }> = [];
    const allocates: Array<{ to: UdpEndpoint; args: RelayAllocateArgs }> = [];
    const probes: string[] = [];
    let ackAge: number | undefined;
    let bindingId = 11;
    const path = new UdpRelayPath({
      directory: dir,
      selfPeerId: a,
      connectionTo: async (n) => ({ remotePeer: n }) as unknown as Connection,
      request: async (conn, peer, opts) => {
        const relay = String((conn as unknown as { remotePeer: string }).remotePeer);
        if (opts?.op === 'release') {
          requests.push({ relay, peer, op: 'release' });
          return { released: true };
        }
        requests.push({ relay, peer });
        const grant: RelayGrant = { bindingId, member: 1, token: new Uint8Array(32).fill(5), port: 4003, peer };
        return grant;
      },
      allocateDatagram: (args) => {
        allocates.push({ to: { ip: '', port: 0 }, args: { ...args, indexes: [...args.indexes] } });
        return new Uint8Array(64);
      },
      sendAllocate: (to) => {
        allocates[allocates.length - 1]!.to = to;
        return true;
      },
      ackAgeMs: () => ackAge,
      probeSoon: (n) => probes.push(n),
      log: pino({ level: 'silent' }),
      reallocateMs: 1000,
    });
    const session = (localIndex: number, remoteIndex: number): ActiveSession => ({
      node: 'b',
      peerId: b,
      localIndex,
      remoteIndex,
      candidates: [],
      createdAt: Date.now(),
      initiator: true,
    });
    return {
      path,
      requests,
      allocates,
      probes,
      session,
      setAck: (v: number | undefined) => {
        ackAge = v;
      },
      setBinding: (v: number) => {
        bindingId = v;
      },
    };
  }
  const settle = () => new Promise((r) => setTimeout(r, 10));

  it('does nothing until the peer candidates go unanswered; then binds and registers our send index', async () => {
    const t = setup();
    t.path.sessionEstablished(t.session(100, 200));
    t.path.tick(Date.now());
    expect(t.requests).toEqual([]);
    expect(t.path.targets('b')).toEqual([]);
    t.path.unanswered('b');
    await settle();
    expect(t.requests).toEqual([{ relay: 'r1', peer: ids[1] }]);
    // The allocate lists the peer's receiver index we send to (our session's remoteIndex).
    expect(t.allocates.map((x) => x.args.indexes)).toEqual([[200]]);
    expect(t.allocates[0]!.to).toEqual({ ip: '198.51.100.1', port: 4003 });
    expect(t.allocates[0]!.args.bindingId).toBe(11);
    expect(t.path.targets('b')).toEqual([{ ip: '198.51.100.1', port: 4003 }]);
    expect(t.probes).toEqual(['b']);
    expect(t.path.isRelay({ ip: '198.51.100.1', port: 4003 })).toBe(true);
    expect(t.path.isRelay({ ip: '198.51.100.1', port: 4002 })).toBe(false);
    t.path.stop();
  });

  it('registers a rekey index at once, beside the old one, and re-sends allocates on time', async () => {
    const t = setup();
    t.path.sessionEstablished(t.session(100, 200));
    t.path.unanswered('b');
    await settle();
    t.setAck(0);
    t.path.sessionEstablished(t.session(101, 201));
    expect(t.allocates.at(-1)!.args.indexes).toEqual([201, 200]);
    const n = t.allocates.length;
    t.path.tick(Date.now());
    expect(t.allocates.length).toBe(n);
    t.path.tick(Date.now() + 1500);
    expect(t.allocates.length).toBe(n + 1);
    t.path.stop();
  });

  it('asks a quiet relay again (a restarted relay hands out a new binding)', async () => {
    const t = setup();
    t.path.sessionEstablished(t.session(100, 200));
    t.path.unanswered('b');
    await settle();
    t.setAck(0);
    t.path.tick(Date.now() + 5000);
    await settle();
    expect(t.requests).toHaveLength(1);
    t.setAck(3000);
    t.setBinding(12);
    t.path.tick(Date.now() + 5000);
    await settle();
    expect(t.requests).toHaveLength(2);
    expect(t.allocates.at(-1)!.args.bindingId).toBe(12);
    t.path.stop();
  });

  it('releases its bindings when the peer sessions end', async () => {
    const t = setup();
    t.path.sessionEstablished(t.session(100, 200));
    t.path.unanswered('b');
    await settle();
    t.path.lost('b');
    await settle();
    expect(t.requests.at(-1)).toEqual({ relay: 'r1', peer: ids[1], op: 'release' });
    expect(t.path.counters.released).toBe(1);
    expect(t.path.targets('b')).toEqual([]);
    t.path.stop();
  });

  it('leaves the relay only after direct answers in a row', async () => {
    const t = setup();
    t.path.sessionEstablished(t.session(100, 200));
    t.path.unanswered('b');
    const now = Date.now();
    for (let i = 1; i < DIRECT_ANSWERS_TO_LEAVE_RELAY; i++)
      expect(t.path.preferDirect('b', now + i * 2000)).toBe(false);
    // A long gap starts the count over.
    expect(t.path.preferDirect('b', now + 60_000)).toBe(false);
    for (let i = 2; i < DIRECT_ANSWERS_TO_LEAVE_RELAY; i++)
      expect(t.path.preferDirect('b', now + 60_000 + i * 100)).toBe(false);
    expect(t.path.preferDirect('b', now + 61_000)).toBe(true);
    expect(t.path.counters.leftRelay).toBe(1);
    t.path.lost('b');
    expect(t.path.active('b')).toBe(false);
    t.path.stop();
  });

  it('gives a peer that needed a relay its relays at once on the next session, until direct works again', async () => {
    const t = setup();
    const relay = { ip: '198.51.100.1', port: 4003 };
    t.path.sessionEstablished(t.session(100, 200));
    t.path.unanswered('b');
    await settle();
    // A reply through the relay: the session runs there.
    t.path.observe('b', relay, 2, Date.now(), relay);
    expect(t.path.relayRtts('b')).toEqual({ '198.51.100.1:4003': 2 });
    // Idle close, then a new session: no unanswered burst needed.
    t.path.lost('b');
    await settle();
    const before = t.requests.filter((r) => r.op === undefined).length;
    t.path.sessionEstablished(t.session(300, 400));
    await settle();
    expect(t.path.active('b')).toBe(true);
    expect(t.path.counters.remembered).toBe(1);
    expect(t.requests.filter((r) => r.op === undefined)).toHaveLength(before + 1);
    expect(t.allocates.at(-1)!.args.indexes).toEqual([400]);
    // Direct works again: the next session starts without relays.
    const now = Date.now();
    for (let i = 0; i < DIRECT_ANSWERS_TO_LEAVE_RELAY; i++) t.path.preferDirect('b', now + i * 100);
    t.path.lost('b');
    t.path.sessionEstablished(t.session(500, 600));
    expect(t.path.active('b')).toBe(false);
    expect(t.path.counters.remembered).toBe(1);
    // A late reply through the relay while the session is on a direct endpoint is no need.
    t.path.unanswered('b');
    await settle();
    t.path.observe('b', relay, 2, Date.now(), { ip: '192.0.2.9', port: 4002 });
    t.path.lost('b');
    t.path.sessionEstablished(t.session(700, 800));
    expect(t.path.active('b')).toBe(false);
    t.path.stop();
  });

  it('ignores replies from endpoints it holds no grant on', () => {
    const t = setup();
    t.path.sessionEstablished(t.session(100, 200));
    t.path.observe('b', { ip: '198.51.100.1', port: 4003 }, 2, Date.now());
    expect(t.path.relayRtts('b')).toEqual({});
    t.path.lost('b');
    t.path.sessionEstablished(t.session(300, 400));
    expect(t.path.active('b')).toBe(false);
    t.path.stop();
  });
});

// The prober (overlay/udp-paths.ts) with the relay rung, over an in-memory network in which A
// and B cannot reach each other directly until the test allows it, and relay endpoints that
// forward every datagram to the other member (as the native relay does once both registered)
// while they are up.
describe('UdpPaths with the udp-relayed rung', () => {
  const R1: UdpEndpoint = { ip: '198.51.100.1', port: 4003 };
  const R2: UdpEndpoint = { ip: '198.51.100.2', port: 4003 };
  const epKey = (e: UdpEndpoint) => `${e.ip}:${e.port}`;

  class Net {
    readonly sockets = new Map<string, Sock>();
    /** Relay endpoints that forward now. */
    readonly relaysUp = new Set<string>();
    /** One-way delay through a relay (ms), both directions; default 1. */
    readonly relayDelay = new Map<string, number>();
    direct = false;
  }
  class Sock implements DataSocketLike {
    readonly port = 4002;
    readonly sessions = new Map<number, { remoteIndex: number; endpoint?: UdpEndpoint }>();
    paths!: UdpPaths;
    allocates = 0;
    readonly net: Net;
    readonly seenAs: UdpEndpoint;
    readonly other: () => Sock;
    constructor(net: Net, seenAs: UdpEndpoint, other: () => Sock) {
      this.net = net;
      this.seenAs = seenAs;
      this.other = other;
      net.sockets.set(epKey(seenAs), this);
    }
    addSession(k: SessionKeys): void {
      this.sessions.set(k.localIndex, { remoteIndex: k.remoteIndex });
    }
    setEndpoint(i: number, endpoint: UdpEndpoint): void {
      const s = this.sessions.get(i);
      if (s) s.endpoint = endpoint;
    }
    removeSession(i: number): void {
      this.sessions.delete(i);
    }
    send(_i: number, packets: Packet[]): number {
      return packets.length;
    }
    sendControl(i: number, message: Uint8Array, to?: UdpEndpoint): boolean {
      const s = this.sessions.get(i);
      const dest = to ?? s?.endpoint;
      if (!s || !dest) return false;
      const copy = message.slice();
      if (this.net.relaysUp.has(epKey(dest))) {
        // The relay forwards to the other member, from its own address.
        setTimeout(
          () => this.other().paths.onControl(s.remoteIndex, copy, dest),
          this.net.relayDelay.get(epKey(dest)) ?? 1,
        );
      } else if (this.net.direct) {
        const peer = this.net.sockets.get(epKey(dest));
        if (peer) setTimeout(() => peer.paths.onControl(s.remoteIndex, copy, this.seenAs), 1);
      }
      return true;
    }
    sendRelayAllocate(): boolean {
      this.allocates++;
      return true;
    }
    session() {
      return { txCounter: 0, rxPackets: 0, lastRxAgeMs: -1, createdAgeMs: 0 };
    }
  }

  /** A and B, each with its prober and relay rung; relays r1 (and r2) in both directories. */
  function pair(relayCount: 1 | 2) {
    const [a, b, r1, r2] = ids as [string, string, string, string];
    const net = new Net();
    let sa!: Sock;
    let sb!: Sock;
    sa = new Sock(net, { ip: '192.0.2.1', port: 4002 }, () => sb);
    sb = new Sock(net, { ip: '192.0.2.2', port: 4002 }, () => sa);
    const relayNodes = [
      node('r1', r1, { relay: true, relayPort: R1.port, ip: R1.ip }),
      node('r2', r2, { relay: true, relayPort: R2.port, ip: R2.ip }),
    ].slice(0, relayCount);
    const build = (sock: Sock, self: string, peer: string, peerNode: string, peerIp: string) => {
      const dir = directory([node(peerNode, peer, { ip: peerIp }), ...relayNodes]);
      let paths!: UdpPaths;
      const relay = new UdpRelayPath({
        directory: dir,
        selfPeerId: self,
        connectionTo: async () => ({}) as Connection,
        request: async (_c, p) => ({
          bindingId: 3,
          member: self < p ? 0 : 1,
          token: new Uint8Array(32),
          port: 4003,
          peer: p,
        }),
        allocateDatagram: () => new Uint8Array(64),
        sendAllocate: () => sock.sendRelayAllocate(),
        ackAgeMs: (n) => {
          const f = paths.facts(n);
          const at = f?.lastRxAt ?? f?.confirmedAt;
          return at === undefined ? undefined : Date.now() - at;
        },
        probeSoon: (n) => paths.probeSoon(n),
        log: pino({ level: 'silent' }),
        relayChoice: { silentMs: 200, minDwellMs: 300 },
      });
      paths = new UdpPaths({
        socket: sock,
        nodeOf: (i) => (sock.sessions.has(i) ? peerNode : undefined),
        mode: () => 'auto',
        publicness: () => ({ self: false, peer: false }),
        log: pino({ level: 'silent' }),
        onChange: () => {},
        probeIntervalMs: 10,
        probeBurstMs: 150,
        slowProbeMs: 40,
        keepaliveMs: 40,
        tuning: { deadAfterMs: 400, holdDownMs: 100, holdDownMaxMs: 1000, stableAfterMs: 60_000, freshMs: 300 },
        relay,
      });
      sock.paths = paths;
      return { paths, relay };
    };
    const A = build(sa, a, b, 'b', '192.0.2.2');
    const B = build(sb, b, a, 'a', '192.0.2.1');
    const session = (
      nodeName: string,
      peerId: string,
      local: number,
      remote: number,
      cand: string,
      nat?: NatKind,
    ): ActiveSession => ({
      node: nodeName,
      peerId,
      localIndex: local,
      remoteIndex: remote,
      candidates: [{ ip: cand, port: 4002 }],
      createdAt: Date.now(),
      initiator: local < remote,
      ...(nat === undefined ? {} : { selfNat: nat, peerNat: nat }),
    });
    /** `nat`: both sides' NAT kind, as the session handshake tells it (absent: unknown). */
    const start = (nat?: NatKind) => {
      sa.addSession({ localIndex: 1, remoteIndex: 2, txKey: new Uint8Array(), rxKey: new Uint8Array() });
      sb.addSession({ localIndex: 2, remoteIndex: 1, txKey: new Uint8Array(), rxKey: new Uint8Array() });
      A.paths.sessionEstablished(session('b', b, 1, 2, '192.0.2.2', nat));
      B.paths.sessionEstablished(session('a', a, 2, 1, '192.0.2.1', nat));
    };
    const stop = () => {
      A.paths.stop();
      B.paths.stop();
      A.relay.stop();
      B.relay.stop();
    };
    return { net, sa, sb, A, B, start, stop };
  }

  const until = async (what: string, fn: () => boolean, ms = 3000) => {
    const end = Date.now() + ms;
    while (!fn()) {
      if (Date.now() > end) throw new Error(`timed out: ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it('moves to the relay when direct candidates stay silent, and back to direct once they answer in a row', async () => {
    const { net, sa, A, B, start, stop } = pair(1);
    net.relaysUp.add(epKey(R1));
    start();
    try {
      await until('A on the relay', () => A.paths.facts('b')?.kind === 'udp-relayed');
      await until('B on the relay', () => B.paths.facts('a')?.kind === 'udp-relayed');
      expect(A.paths.endpointOf('b')).toEqual(R1);
      expect(sa.allocates).toBeGreaterThan(0);
      await until('A carries on UDP', () => A.paths.carries('b'));
      // Direct opens: the slow probes of the direct candidates get answers, and after a few
      // in a row the session leaves the relay; UDP keeps carrying throughout.
      net.direct = true;
      await until('A direct again', () => A.paths.facts('b')?.kind === 'udp-punched');
      expect(A.paths.endpointOf('b')).toEqual({ ip: '192.0.2.2', port: 4002 });
      expect(A.relay.counters.leftRelay).toBe(1);
      expect(A.paths.carries('b')).toBe(true);
      expect(A.paths.counters.switches).toBe(1);
    } finally {
      stop();
    }
  });

  it('asks the relays on the first session when both NATs are endpoint-dependent, without the burst', async () => {
    const { net, A, B, start, stop } = pair(1);
    net.relaysUp.add(epKey(R1));
    start('endpoint-dependent');
    try {
      // Asked at once: the relay rung is active before any probe went unanswered.
      expect(A.relay.active('b')).toBe(true);
      expect(B.relay.active('a')).toBe(true);
      expect(A.relay.counters.bothHard).toBe(1);
      await until('A on the relay', () => A.paths.facts('b')?.kind === 'udp-relayed', 120);
      expect(A.paths.counters.failures.unanswered ?? 0).toBe(0);
      // A path through a relay is no punch: the attempt is counted as relayed.
      expect(A.paths.counters.failures.relayed).toBe(1);
      expect(A.paths.counters.successes).toBe(0);
    } finally {
      stop();
    }
  });

  it('waits out the burst before the relays when one NAT is easy (a punch may still work)', () => {
    const { net, A, start, stop } = pair(1);
    net.relaysUp.add(epKey(R1));
    start('endpoint-independent');
    try {
      expect(A.relay.active('b')).toBe(false);
      expect(A.relay.counters.bothHard).toBe(0);
    } finally {
      stop();
    }
  });

  it('uses the relay that answers when one is down, and fails over to the other when it dies', async () => {
    const { net, A, B, start, stop } = pair(2);
    // r1 is down from the start: the pair settles on r2.
    net.relaysUp.add(epKey(R2));
    start();
    try {
      await until('A on r2', () => A.paths.endpointOf('b')?.ip === R2.ip && A.paths.carries('b'));
      await until('B on r2', () => B.paths.endpointOf('a')?.ip === R2.ip);
      expect(A.relay.targets('b')).toHaveLength(2);
      // r1 comes up, r2 dies: liveness gives up on r2 and the probing finds r1.
      net.relaysUp.add(epKey(R1));
      await new Promise((r) => setTimeout(r, 200));
      // A relay answering while another relay carries does not move the path.
      expect(A.paths.endpointOf('b')).toEqual(R2);
      net.relaysUp.delete(epKey(R2));
      await until('A on r1', () => A.paths.endpointOf('b')?.ip === R1.ip && A.paths.carries('b'), 5000);
      expect(A.paths.facts('b')?.kind).toBe('udp-relayed');
    } finally {
      stop();
    }
  });
  it('moves to a clearly faster relay after the dwell time, each side by its own RTTs', async () => {
    const { net, A, B, start, stop } = pair(2);
    // Only r2 answers at first; then r1 comes up much faster while r2 slows down.
    net.relaysUp.add(epKey(R2));
    start();
    try {
      await until('A on r2', () => A.paths.endpointOf('b')?.ip === R2.ip && A.paths.carries('b'));
      net.relayDelay.set(epKey(R2), 15);
      net.relaysUp.add(epKey(R1));
      await until('A on r1', () => A.paths.endpointOf('b')?.ip === R1.ip, 5000);
      await until('B on r1', () => B.paths.endpointOf('a')?.ip === R1.ip, 5000);
      expect(A.relay.counters.relayMoves.faster).toBeGreaterThanOrEqual(1);
      expect(A.relay.counters.relayMoves.failover).toBe(0);
      const rtts = A.relay.relayRtts('b');
      expect(rtts[epKey(R1)]!).toBeLessThan(rtts[epKey(R2)]!);
      expect(A.paths.facts('b')?.kind).toBe('udp-relayed');
      expect(A.paths.counters.switches).toBe(1);
      // Equal again: hysteresis keeps the path where it is.
      net.relayDelay.set(epKey(R2), 1);
      await new Promise((r) => setTimeout(r, 800));
      expect(A.paths.endpointOf('b')).toEqual(R1);
    } finally {
      stop();
    }
  });

  it('fails over from a silent relay before the path is declared dead', async () => {
    const { net, A, start, stop } = pair(2);
    net.relaysUp.add(epKey(R1));
    net.relaysUp.add(epKey(R2));
    start();
    try {
      await until('A on a relay', () => A.paths.carries('b') && A.paths.facts('b')?.kind === 'udp-relayed');
      const first = A.paths.endpointOf('b')!;
      const other = first.ip === R1.ip ? R2 : R1;
      net.relaysUp.delete(epKey(first));
      await until('A on the other relay', () => A.paths.endpointOf('b')?.ip === other.ip, 5000);
      expect(A.relay.counters.relayMoves.failover).toBe(1);
      // Moved while the path still counted as alive: UDP never stopped carrying.
      expect(A.paths.counters.switches).toBe(1);
      expect(A.paths.carries('b')).toBe(true);
    } finally {
      stop();
    }
  });
});
