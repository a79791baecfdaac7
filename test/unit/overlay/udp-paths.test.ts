// The prober and ladder of overlay/udp-paths.ts over an in-memory "network" of two data
// socket doubles (sealing is the native socket's job and is tested in the dataplane; here the
// question is which endpoints get probed, which one wins, and when traffic moves).
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Packet } from '../../../dataplane/types.ts';
import { ControlType, decodeControl, encodeControl, UdpPaths } from '../../../overlay/udp-paths.ts';
import type { ActiveSession } from '../../../overlay/udp-sessions.ts';
import type { DataSocketLike, SessionKeys, UdpEndpoint } from '../../../overlay/udp-types.ts';

const key = (e: UdpEndpoint) => `${e.ip}:${e.port}`;

class FakeNet {
  readonly sockets = new Map<string, FakeSocket>();
  /** "fromIp>toIp" pairs whose datagrams vanish. */
  readonly blocked = new Set<string>();
}

class FakeSocket implements DataSocketLike {
  readonly sessions = new Map<number, { remoteIndex: number; endpoint?: UdpEndpoint }>();
  readonly sentTo: string[] = [];
  paths!: UdpPaths;
  readonly net: FakeNet;
  /** Where this socket's datagrams appear to come from (its NAT's mapping, or itself). */
  readonly seenAs: UdpEndpoint;
  readonly port: number;
  constructor(net: FakeNet, seenAs: UdpEndpoint, port: number) {
    this.net = net;
    this.seenAs = seenAs;
    this.port = port;
    net.sockets.set(key(seenAs), this);
  }
  addSession(keys: SessionKeys): void {
    this.sessions.set(keys.localIndex, { remoteIndex: keys.remoteIndex });
  }
  setEndpoint(localIndex: number, endpoint: UdpEndpoint): void {
    const s = this.sessions.get(localIndex);
    if (s) s.endpoint = endpoint;
  }
  removeSession(localIndex: number): void {
    this.sessions.delete(localIndex);
  }
  send(_i: number, packets: Packet[]): number {
    return packets.length;
  }
  sendControl(localIndex: number, message: Uint8Array, to?: UdpEndpoint): boolean {
    const s = this.sessions.get(localIndex);
    const dest = to ?? s?.endpoint;
    if (!s || !dest) return false;
    this.sentTo.push(key(dest));
    const peer = this.net.sockets.get(key(dest));
    if (!peer || this.net.blocked.has(`${this.seenAs.ip}>${dest.ip}`)) return true;
    const copy = message.slice();
    setTimeout(() => peer.paths.onControl(s.remoteIndex, copy, this.seenAs), 1);
    return true;
  }
  session() {
    return { txCounter: 0, rxPackets: 0, lastRxAgeMs: -1, createdAgeMs: 0 };
  }
}

const tuning = { deadAfterMs: 400, holdDownMs: 300, holdDownMaxMs: 2000, stableAfterMs: 60_000, freshMs: 300 };

function side(
  net: FakeNet,
  name: string,
  peer: string,
  seenAs: UdpEndpoint,
  index: number,
  mode: 'auto' | 'udp' | 'stream' = 'auto',
) {
  const socket = new FakeSocket(net, seenAs, seenAs.port);
  const changes: string[] = [];
  const paths = new UdpPaths({
    socket,
    nodeOf: (i) => (socket.sessions.has(i) ? peer : undefined),
    mode: () => mode,
    publicness: () => ({ self: false, peer: false }),
    log: pino({ level: 'silent' }),
    onChange: (n) => changes.push(n),
    probeIntervalMs: 20,
    probeBurstMs: 2000,
    keepaliveMs: 50,
    tuning,
  });
  socket.paths = paths;
  return { name, socket, paths, changes, index };
}

function session(
  node: string,
  local: number,
  remote: number,
  candidates: UdpEndpoint[],
  initiator: boolean,
): ActiveSession {
  return {
    node,
    peerId: `id-${node}`,
    localIndex: local,
    remoteIndex: remote,
    candidates,
    createdAt: Date.now(),
    initiator,
  };
}

const until = async (what: string, fn: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('control messages', () => {
  it('round-trip and refuse anything else', () => {
    const nonce = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(decodeControl(encodeControl(ControlType.Probe, nonce))).toEqual({ type: ControlType.Probe, nonce });
    expect(decodeControl(new Uint8Array(12))).toBeUndefined();
    const bad = encodeControl(ControlType.Probe, nonce);
    bad[3] = 9;
    expect(decodeControl(bad)).toBeUndefined();
    expect(decodeControl(encodeControl(ControlType.Probe, nonce).subarray(0, 11))).toBeUndefined();
  });
});

describe('UDP path probing', () => {
  const stops: UdpPaths[] = [];
  afterEach(() => {
    for (const p of stops.splice(0)) p.stop();
  });

  function pair(opts: { aSeenAs?: UdpEndpoint; bSeenAs?: UdpEndpoint; aCandidatesForB?: UdpEndpoint[] } = {}) {
    const net = new FakeNet();
    const aSeen = opts.aSeenAs ?? { ip: '198.51.100.1', port: 21_001 };
    const bSeen = opts.bSeenAs ?? { ip: '198.51.100.2', port: 21_002 };
    const a = side(net, 'a', 'b', aSeen, 11);
    const b = side(net, 'b', 'a', bSeen, 22);
    stops.push(a.paths, b.paths);
    a.socket.addSession({ localIndex: 11, remoteIndex: 22, txKey: new Uint8Array(32), rxKey: new Uint8Array(32) });
    b.socket.addSession({ localIndex: 22, remoteIndex: 11, txKey: new Uint8Array(32), rxKey: new Uint8Array(32) });
    const lanOfB = { ip: '10.2.0.2', port: 21_002 };
    a.paths.sessionEstablished(session('b', 11, 22, opts.aCandidatesForB ?? [lanOfB, bSeen], true));
    b.paths.sessionEstablished(session('a', 22, 11, [{ ip: '10.1.0.2', port: 21_001 }, aSeen], false));
    return { net, a, b, aSeen, bSeen, lanOfB };
  }

  it('probes every candidate, adopts the one that answers, and moves traffic to UDP', async () => {
    const { a, b, bSeen, lanOfB } = pair();
    await until('A carries on UDP', () => a.paths.carries('b'));
    await until('B carries on UDP', () => b.paths.carries('a'));
    expect(a.paths.endpointOf('b')).toEqual(bSeen);
    expect(a.socket.sessions.get(11)?.endpoint).toEqual(bSeen);
    expect(a.socket.sentTo).toContain(key(lanOfB)); // tried, never answered
    expect(a.paths.counters.probeReplies).toBeGreaterThan(0);
    expect(a.changes).toContain('b');
  });

  it('counts the attempt, its success and the time it took to go direct', async () => {
    const { a } = pair();
    expect(a.paths.counters.attempts).toBe(1);
    expect(a.paths.msToDirect('b')).toBeUndefined();
    await until('A carries on UDP', () => a.paths.carries('b'));
    expect(a.paths.counters.successes).toBe(1);
    expect(a.paths.counters.failures).toEqual({});
    expect(a.paths.msToDirect('b')).toBeGreaterThanOrEqual(0);
    expect(a.paths.alive('b', Date.now())).toBe(true);
  });

  it('counts a whole burst without a reply as an unanswered attempt', async () => {
    const { net, a, aSeen, bSeen } = pair();
    // Nothing gets through either way: the burst (2 s here) ends unanswered.
    net.blocked.add(`${aSeen.ip}>${bSeen.ip}`);
    net.blocked.add(`${bSeen.ip}>${aSeen.ip}`);
    await until('A gives up the burst', () => (a.paths.counters.failures.unanswered ?? 0) === 1, 6000);
    expect(a.paths.counters.attempts).toBe(1);
    expect(a.paths.counters.successes).toBe(0);
    expect(a.paths.msToDirect('b')).toBeUndefined();
    expect(a.paths.alive('b', Date.now())).toBe(false);
  });

  it('learns the address the peer’s probes come from when its own candidates are wrong (a remapping NAT)', async () => {
    // B's NAT maps it to port 40000, not the port B announced: A's candidates miss, B's
    // probes reach A from the real mapping, and A probes that back.
    const { a } = pair({
      bSeenAs: { ip: '198.51.100.2', port: 40_000 },
      aCandidatesForB: [{ ip: '198.51.100.2', port: 21_002 }],
    });
    await until('A carries on UDP', () => a.paths.carries('b'));
    expect(a.paths.endpointOf('b')).toEqual({ ip: '198.51.100.2', port: 40_000 });
  });

  it('does not count one-way reachability as a path', async () => {
    const { net, a, b, aSeen, bSeen } = pair();
    net.blocked.add(`${aSeen.ip}>${bSeen.ip}`);
    await new Promise((r) => setTimeout(r, 600));
    // A hears B's probes (authentic) but nothing of A's reaches B: neither end uses UDP.
    expect(a.paths.carries('b')).toBe(false);
    expect(b.paths.carries('a')).toBe(false);
    expect(a.paths.counters.probesSent).toBeGreaterThan(5);
  });

  it('falls back when the path stops answering and returns after the hold-down once it answers again', async () => {
    const { net, a, aSeen, bSeen } = pair();
    await until('A on UDP', () => a.paths.carries('b'));
    net.blocked.add(`${bSeen.ip}>${aSeen.ip}`);
    await until('A off UDP', () => !a.paths.carries('b'), 3000);
    expect(a.paths.ladder('b')).toMatchObject({ carrier: 'stream', demotions: 1 });
    net.blocked.clear();
    await until('A back on UDP', () => a.paths.carries('b'), 5000);
    expect(a.paths.counters.switches).toBe(3);
  });

  it('counts control messages for unknown sessions or with bad contents, and answers nothing', () => {
    const { a } = pair();
    const before = a.socket.sentTo.length;
    a.paths.onControl(999, encodeControl(ControlType.Probe, new Uint8Array(8)), { ip: '192.0.2.9', port: 9 });
    a.paths.onControl(11, new Uint8Array(40), { ip: '192.0.2.9', port: 9 });
    // A reply with a nonce we never sent is not a confirmation.
    a.paths.onControl(11, encodeControl(ControlType.ProbeReply, new Uint8Array(8)), { ip: '192.0.2.9', port: 9 });
    expect(a.paths.counters.badControl).toBe(3);
    expect(a.socket.sentTo.slice(before).filter((t) => t === '192.0.2.9:9')).toEqual([]);
    expect(a.paths.endpointOf('b')).toBeUndefined();
  });

  it('pinned to udp, carries from the first moment and never hands traffic to the stream', async () => {
    const net = new FakeNet();
    const a = side(net, 'a', 'b', { ip: '198.51.100.1', port: 21_001 }, 11, 'udp');
    stops.push(a.paths);
    a.socket.addSession({ localIndex: 11, remoteIndex: 22, txKey: new Uint8Array(32), rxKey: new Uint8Array(32) });
    // Nobody answers: the path is never confirmed.
    a.paths.sessionEstablished(session('b', 11, 22, [{ ip: '198.51.100.2', port: 21_002 }], true));
    expect(a.paths.carries('b')).toBe(true);
    await new Promise((r) => setTimeout(r, 600));
    expect(a.paths.carries('b')).toBe(true);
    expect(a.paths.ladder('b')?.carrier).toBe('udp');
  });
});

describe('birthday spraying (the easy side)', () => {
  const stops: UdpPaths[] = [];
  afterEach(() => {
    for (const p of stops.splice(0)) p.stop();
  });

  /** An easy side whose peer (hard, endpoint-dependent) announces a third party's address too. */
  async function spray(vouched: string | undefined) {
    const net = new FakeNet();
    const socket = Object.assign(new FakeSocket(net, { ip: '198.51.100.1', port: 21_001 }, 21_001), {
      addSocket: () => ({ id: 1, port: 30_000 }),
      closeSocket: () => true,
    });
    const paths = new UdpPaths({
      socket,
      nodeOf: (i) => (socket.sessions.has(i) ? 'hard' : undefined),
      mode: () => 'auto',
      publicness: () => ({ self: false, peer: false }),
      log: pino({ level: 'silent' }),
      onChange: () => undefined,
      vouchedIp: async () => vouched,
    });
    socket.paths = paths;
    stops.push(paths);
    socket.addSession({ localIndex: 11, remoteIndex: 22, txKey: new Uint8Array(32), rxKey: new Uint8Array(32) });
    paths.sessionEstablished({
      ...session(
        'hard',
        11,
        22,
        [
          { ip: '203.0.113.9', port: 40_000 },
          { ip: '192.0.2.77', port: 40_000 },
        ],
        true,
      ),
      selfNat: 'endpoint-independent',
      peerNat: 'endpoint-dependent',
    });
    await new Promise((r) => setTimeout(r, 1200));
    const sprayed = (ip: string) => socket.sentTo.filter((t) => t.startsWith(`${ip}:`) && t !== `${ip}:40000`).length;
    return { sprayed, counters: paths.counters.birthday! };
  }

  it('sprays only the IP a relay vouches for, never another address the peer announces', async () => {
    const { sprayed, counters } = await spray('203.0.113.9');
    expect(sprayed('203.0.113.9')).toBeGreaterThan(50);
    expect(sprayed('192.0.2.77')).toBe(0);
    expect(counters.attemptsEasy).toBe(1);
  });

  it('sprays nothing, and counts it, when no relay vouches for the peer', async () => {
    const { sprayed, counters } = await spray(undefined);
    expect(sprayed('203.0.113.9') + sprayed('192.0.2.77')).toBe(0);
    expect(counters.unvouched).toBe(1);
    expect(counters.attemptsEasy).toBe(0);
  });
});
