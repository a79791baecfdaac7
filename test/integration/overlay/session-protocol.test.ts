// /edgemesh/session/1.0.0 between two real libp2p hosts: both ends install matching keys
// (tx of one = rx of the other, indexes crossed), rekeys replace the session and retire the
// old one after the grace period, hostile messages close the stream and are counted.
import type { Connection } from '@libp2p/interface';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JsonLineReader } from '../../../overlay/json-lines.ts';
import { SESSION_PROTOCOL } from '../../../overlay/session-protocol.ts';
import { type ActiveSession, UdpSessions, type UdpSessionsOptions } from '../../../overlay/udp-sessions.ts';
import { waitFor } from '../../support/overlay-cluster.ts';
import { type HostPair, loopbackHostPair, quietLogger, RecordingSocket } from '../../support/overlay-session-pair.ts';

const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');

describe('UDP session protocol over libp2p', () => {
  let pair: HostPair;
  let sockets: [RecordingSocket, RecordingSocket];
  let sessions: UdpSessions[];
  const established: ActiveSession[][] = [[], []];
  const lost: string[][] = [[], []];

  async function connection(from: 0 | 1): Promise<Connection> {
    const to = pair.hosts[from === 0 ? 1 : 0];
    const open = pair.hosts[from].getConnections(to.peerId).find((c) => c.status === 'open');
    return open ?? pair.hosts[from].dial(to.getMultiaddrs()[0]!);
  }

  function make(i: 0 | 1, extra: Partial<UdpSessionsOptions> = {}): UdpSessions {
    return new UdpSessions({
      host: pair.hosts[i],
      directory: pair.dirs[i],
      socket: sockets[i],
      cipher: 'aes-256-gcm',
      localEndpoints: () => [
        { ip: '192.0.2.1', port: sockets[i].port },
        { ip: '10.1.0.2', port: sockets[i].port },
      ],
      connectionTo: () => connection(i),
      log: quietLogger(),
      onEstablished: (s) => established[i]!.push(s),
      onLost: (n) => lost[i]!.push(n),
      ...extra,
    });
  }

  beforeEach(async () => {
    pair = await loopbackHostPair();
    sockets = [new RecordingSocket(21_001), new RecordingSocket(21_002)];
    established[0] = [];
    established[1] = [];
    lost[0] = [];
    lost[1] = [];
    sessions = [];
  });
  afterEach(async () => {
    for (const s of sessions) await s.stop();
    await pair.stop();
  });

  it('installs matching keys on both ends with crossed indexes and the offered candidates', async () => {
    const [a, b] = [make(0), make(1)];
    sessions.push(a, b);
    const s = await a.ensure('n1');
    expect(s).toBeDefined();
    await waitFor('session at B', async () => established[1]!.length === 1);
    const sa = sockets[0].sessions.get(s!.localIndex)!;
    const sb = sockets[1].sessions.get(s!.remoteIndex)!;
    expect(sb).toBeDefined();
    expect(hex(sa.keys.txKey)).toBe(hex(sb.keys.rxKey));
    expect(hex(sa.keys.rxKey)).toBe(hex(sb.keys.txKey));
    expect(sa.keys.remoteIndex).toBe(sb.keys.localIndex);
    expect(sb.keys.remoteIndex).toBe(sa.keys.localIndex);
    expect(s!.candidates).toEqual([
      { ip: '192.0.2.1', port: 21_002 },
      { ip: '10.1.0.2', port: 21_002 },
    ]);
    expect(established[1]![0]!.candidates.map((c) => c.port)).toEqual([21_001, 21_001]);
    expect(a.nodeOf(s!.localIndex)).toBe('n1');
    expect(b.nodeOf(s!.remoteIndex)).toBe('n0');
    // A second ensure reuses the session.
    expect((await a.ensure('n1'))?.localIndex).toBe(s!.localIndex);
    expect(a.counters.handshakesInitiated).toBe(1);
    expect(b.counters.handshakesAccepted).toBe(1);
  });

  it("carries both NAT kinds (birthday punching roles): each side records its own and the peer's", async () => {
    const [a, b] = [
      make(0, { natKind: () => 'endpoint-dependent' }),
      make(1, { natKind: () => 'endpoint-independent' }),
    ];
    sessions.push(a, b);
    const s = await a.ensure('n1');
    await waitFor('session at B', async () => established[1]!.length === 1);
    expect([s!.selfNat, s!.peerNat]).toEqual(['endpoint-dependent', 'endpoint-independent']);
    expect([established[1]![0]!.selfNat, established[1]![0]!.peerNat]).toEqual([
      'endpoint-independent',
      'endpoint-dependent',
    ]);
    // A peer that offers no kind (an older version): none recorded, no role.
    await a.stop();
    const c = make(0);
    sessions.push(c);
    const s2 = await c.rekey('n1');
    // B answers a hello without a kind without its own: an older initiator refuses the field.
    expect(s2?.peerNat).toBeUndefined();
    await waitFor('second session at B', async () => established[1]!.length === 2);
    expect(established[1]![1]!.peerNat).toBeUndefined();
  });

  it('leaves its NAT kind out of later hellos to a peer that closed the stream on it (an agent from before the field)', async () => {
    // Host 1 plays an older agent: its strict parser refused any field it did not know.
    const hellos: Array<Record<string, unknown>> = [];
    await pair.hosts[1].handle(SESSION_PROTOCOL, async (stream) => {
      const reader = new JsonLineReader(stream, 2048, (reason, message) => new Error(`${reason}: ${message}`));
      const hello = (await reader.next(5000)) as Record<string, unknown>;
      hellos.push(hello);
      stream.abort(new Error('malformed session hello'));
    });
    const a = make(0, { natKind: () => 'endpoint-dependent' });
    sessions.push(a);
    expect(await a.ensure('n1')).toBeUndefined();
    expect(a.counters.handshakeFailures['signal-closed']).toBe(1);
    expect(await a.ensure('n1')).toBeUndefined();
    expect(hellos.map((h) => h.nat)).toEqual(['endpoint-dependent', undefined]);
  });

  it('rekeys into new keys and indexes, keeps the old session for the grace period, then removes it', async () => {
    const [a, b] = [make(0, { graceMs: 400 }), make(1, { graceMs: 400 })];
    sessions.push(a, b);
    const first = (await a.ensure('n1'))!;
    const second = (await a.rekey('n1'))!;
    expect(second.localIndex).not.toBe(first.localIndex);
    expect(a.current('n1')?.localIndex).toBe(second.localIndex);
    const k1 = sockets[0].sessions.get(first.localIndex)!.keys;
    const k2 = sockets[0].sessions.get(second.localIndex)!.keys;
    expect(hex(k1.txKey)).not.toBe(hex(k2.txKey));
    // Both still open datagrams during the grace period, on both ends.
    expect(a.nodeOf(first.localIndex)).toBe('n1');
    expect(sockets[1].sessions.has(first.remoteIndex)).toBe(true);
    await waitFor(
      'old session removed on both ends',
      async () => !sockets[0].sessions.has(first.localIndex) && !sockets[1].sessions.has(first.remoteIndex),
    );
    expect(a.nodeOf(first.localIndex)).toBeUndefined();
    expect(sockets[1].sessions.has(second.remoteIndex)).toBe(true);
  });

  it('rekeys by itself on time and on packet count', async () => {
    const [a, b] = [make(0, { rekeyAfterMs: 800, graceMs: 200 }), make(1, { rekeyAfterMs: 800, graceMs: 200 })];
    sessions.push(a, b);
    const first = (await a.ensure('n1'))!;
    await waitFor(
      'time rekey',
      async () => (a.current('n1')?.localIndex ?? first.localIndex) !== first.localIndex,
      5000,
    );
    expect(a.counters.rekeys).toBeGreaterThanOrEqual(1);

    await a.stop();
    const c = make(0, { rekeyAfterMs: 3_600_000, rekeyAfterPackets: 1000 });
    sessions.push(c);
    const s = (await c.ensure('n1'))!;
    sockets[0].txCounters.set(s.localIndex, 1000);
    await waitFor(
      'packet-count rekey',
      async () => (c.current('n1')?.localIndex ?? s.localIndex) !== s.localIndex,
      5000,
    );
  });

  it('refuses a peer running another cipher, and counts it on both ends', async () => {
    const [a, b] = [make(0, { cipher: 'chacha20-poly1305' }), make(1)];
    sessions.push(a, b);
    expect(await a.ensure('n1')).toBeUndefined();
    expect(a.counters.handshakeFailures['peer-refused']).toBe(1);
    expect(b.counters.handshakeFailures['inbound-rejected']).toBe(1);
    expect(sockets[1].sessions.size).toBe(0);
  });

  it('closes the stream on hostile messages, counts them, and keeps serving', async () => {
    const b = make(1);
    sessions.push(b);
    const conn = await connection(0);
    const hostile: Array<Uint8Array> = [
      new TextEncoder().encode('not json\n'),
      new TextEncoder().encode(`${JSON.stringify({ v: 1, t: 'hello', eph: 'AAAA', idx: 5, cipher: 'x', eps: [] })}\n`),
      new TextEncoder().encode(
        `${JSON.stringify({ v: 1, t: 'hello', eph: Buffer.alloc(32, 9).toString('base64'), idx: 0, cipher: 'aes-256-gcm', eps: [] })}\n`,
      ),
      new TextEncoder().encode(
        `${JSON.stringify({
          v: 1,
          t: 'hello',
          eph: Buffer.alloc(32, 9).toString('base64'),
          idx: 7,
          cipher: 'aes-256-gcm',
          eps: [{ ip: '127.0.0.1', port: 1 }],
        })}\n`,
      ),
      new Uint8Array(5000).fill(0x41), // no newline, past the bound
      new TextEncoder().encode(
        `${JSON.stringify({
          v: 1,
          t: 'hello',
          eph: Buffer.alloc(32, 9).toString('base64'),
          idx: 8,
          cipher: 'aes-256-gcm',
          eps: [],
          nat: 'wide-open',
        })}\n`,
      ),
    ];
    for (const msg of hostile) {
      const stream = await conn.newStream(SESSION_PROTOCOL);
      const closed = new Promise<void>((r) => stream.addEventListener('close', () => r(), { once: true }));
      stream.send(msg);
      await closed;
    }
    await waitFor('six refusals counted', async () => (b.counters.handshakeFailures['inbound-bad-message'] ?? 0) === 6);
    expect(sockets[1].sessions.size).toBe(0);
    // The responder still works for an honest peer.
    const a = make(0);
    sessions.push(a);
    expect(await a.ensure('n1')).toBeDefined();
  });
});

describe('UDP session handshakes that cross', () => {
  it('leave both ends on the same single session', async () => {
    const pair = await loopbackHostPair();
    const sockets = [new RecordingSocket(21_011), new RecordingSocket(21_012)] as const;
    let arrived = 0;
    const bothReady = Promise.withResolvers<void>();
    const make = (i: 0 | 1) =>
      new UdpSessions({
        host: pair.hosts[i],
        directory: pair.dirs[i],
        socket: sockets[i],
        cipher: 'aes-256-gcm',
        localEndpoints: () => [{ ip: '192.0.2.1', port: sockets[i].port }],
        connectionTo: async () => {
          // Both hellos leave together: each side is initiating when the other's arrives.
          arrived++;
          if (arrived === 2) bothReady.resolve();
          await bothReady.promise;
          const to = pair.hosts[i === 0 ? 1 : 0];
          return (
            pair.hosts[i].getConnections(to.peerId).find((c) => c.status === 'open') ??
            pair.hosts[i].dial(to.getMultiaddrs()[0]!)
          );
        },
        log: quietLogger(),
        onEstablished: () => {},
        onLost: () => {},
      });
    const [a, b] = [make(0), make(1)];
    try {
      await pair.hosts[0].dial(pair.hosts[1].getMultiaddrs()[0]!);
      const [sa, sb] = await Promise.all([a.ensure('n1'), b.ensure('n0')]);
      expect(sa !== undefined || sb !== undefined).toBe(true);
      await waitFor('one current session on each end', async () => {
        const ca = a.current('n1');
        const cb = b.current('n0');
        return (
          ca !== undefined && cb !== undefined && ca.localIndex === cb.remoteIndex && cb.localIndex === ca.remoteIndex
        );
      });
      const failures = { ...a.counters.handshakeFailures, ...b.counters.handshakeFailures };
      expect(failures['peer-refused'] ?? 0).toBeLessThanOrEqual(1);
    } finally {
      await a.stop();
      await b.stop();
      await pair.stop();
    }
  });
});

describe('UDP session handshakes that cross while the responder checks candidates', () => {
  // The responder's candidate check can take a round trip (a relay vouches for the peer's
  // public IP); traffic for the peer may start our own handshake meanwhile. The smaller peer
  // ID must still refuse the other's offer, or both ends install both sessions and each may
  // send on the one the other retires (the UDP path dies when the grace period ends).
  for (const ownDone of [false, true]) {
    it(`install exactly one session on each end (own handshake ${ownDone ? 'done' : 'pending'} by then)`, async () => {
      const pair = await loopbackHostPair();
      const sockets = [new RecordingSocket(21_021), new RecordingSocket(21_022)] as const;
      const small: 0 | 1 = pair.hosts[0].peerId.toString() < pair.hosts[1].peerId.toString() ? 0 : 1;
      const large: 0 | 1 = small === 0 ? 1 : 0;
      // Each end's first candidate check (the other's offer) waits until the test lets it go.
      const gates = [0, 1].map(() => ({
        entered: Promise.withResolvers<void>(),
        release: Promise.withResolvers<void>(),
        calls: 0,
      }));
      if (ownDone) gates[large]!.release.resolve();
      const established: ActiveSession[][] = [[], []];
      const make = (i: 0 | 1) =>
        new UdpSessions({
          host: pair.hosts[i],
          directory: pair.dirs[i],
          socket: sockets[i],
          cipher: 'aes-256-gcm',
          localEndpoints: () => [{ ip: '192.0.2.1', port: sockets[i].port }],
          connectionTo: async () => {
            const to = pair.hosts[i === 0 ? 1 : 0];
            return (
              pair.hosts[i].getConnections(to.peerId).find((c) => c.status === 'open') ??
              pair.hosts[i].dial(to.getMultiaddrs()[0]!)
            );
          },
          filterCandidates: async (_node, c) => {
            const g = gates[i]!;
            if (g.calls++ === 0) {
              g.entered.resolve();
              await g.release.promise;
            }
            return c;
          },
          log: quietLogger(),
          onEstablished: (s) => established[i]!.push(s),
          onLost: () => {},
        });
      const s = [make(0), make(1)] as const;
      const node = (i: 0 | 1) => `n${i}`;
      try {
        await pair.hosts[0].dial(pair.hosts[1].getMultiaddrs()[0]!);
        const fromLarge = s[large].ensure(node(small));
        await gates[small]!.entered.promise;
        // Our own handshake starts while the other's offer is being checked.
        const fromSmall = s[small].ensure(node(large));
        if (ownDone) expect(await fromSmall).toBeDefined();
        else await gates[large]!.entered.promise;
        gates[small]!.release.resolve();
        expect(await fromLarge).toBeUndefined();
        gates[large]!.release.resolve();
        expect(await fromSmall).toBeDefined();
        const ca = s[small].current(node(large))!;
        const cb = s[large].current(node(small))!;
        expect(ca.localIndex).toBe(cb.remoteIndex);
        expect(cb.localIndex).toBe(ca.remoteIndex);
        expect(established[small]).toHaveLength(1);
        expect(established[large]).toHaveLength(1);
        expect(s[large].counters.handshakeFailures['peer-refused']).toBe(1);
      } finally {
        for (const g of gates) g.release.resolve();
        await s[0].stop();
        await s[1].stop();
        await pair.stop();
      }
    });
  }
});
