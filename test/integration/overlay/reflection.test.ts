// Reflection over the real native UDP data socket (loopback only): a member with a session
// learns the ip:port its datagrams arrive from; a binding request from a stranger (no
// session, or a session index without its key) is dropped by the socket before any JS sees
// it, counted, and answered with nothing.
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { UdpDataSocket } from '../../../dataplane/udp-session.ts';
import { encodeBindingRequest, NatReflection } from '../../../overlay/reflection.ts';

const log = pino({ level: 'silent' });
const LOOPBACK = '127.0.0.1';

describe('reflection on the native data socket', () => {
  const cleanup: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanup.splice(0).reverse()) c();
  });

  function socket(onControl: (i: number, m: Uint8Array, from: { ip: string; port: number }) => void) {
    const s = UdpDataSocket.open({ bind: LOOPBACK, port: 0, onPackets: () => {}, onControl });
    cleanup.push(() => s.close());
    return s;
  }

  it('a member learns its mapping; a stranger gets no answer and is counted', async () => {
    let reflector!: NatReflection;
    let member!: NatReflection;
    const rs = socket((i, m, from) => reflector.onMessage(i, m, from));
    const ms = socket((i, m, from) => member.onMessage(i, m, from));
    // One session between the two, keys as the session protocol would derive them.
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    ms.addSession({ localIndex: 11, remoteIndex: 22, txKey: k1, rxKey: k2 }, { ip: LOOPBACK, port: rs.port });
    rs.addSession({ localIndex: 22, remoteIndex: 11, txKey: k2, rxKey: k1 }, { ip: LOOPBACK, port: ms.port });
    reflector = new NatReflection({
      socket: rs,
      nodeOf: (i) => (i === 22 ? 'member' : undefined),
      selfPublic: () => true,
      reflectors: () => [],
      ensureSession: async () => undefined,
      txIndexOf: () => undefined,
      targetsOf: () => [],
      localIps: () => new Set([LOOPBACK]),
      onChange: () => {},
      log,
    });
    member = new NatReflection({
      socket: ms,
      nodeOf: (i) => (i === 11 ? 'reflector' : undefined),
      selfPublic: () => false,
      reflectors: () => ['reflector'],
      ensureSession: async () => undefined,
      txIndexOf: () => 11,
      targetsOf: () => [{ ip: LOOPBACK, port: rs.port }],
      localIps: () => new Set([LOOPBACK]),
      onChange: () => {},
      log,
    });
    cleanup.push(
      () => reflector.stop(),
      () => member.stop(),
    );

    await member.refresh();
    expect(member.reflections().map((r) => r.mapped)).toEqual([{ ip: LOOPBACK, port: ms.port }]);
    // Our own address and port came back: nothing in between.
    expect(member.kind).toBe('none');
    expect(reflector.counters.answered).toBeGreaterThanOrEqual(1);

    // A stranger: plain UDP, a binding request as a control message on a made-up index, and
    // one on the member's index with a forged tag.
    const stranger = createSocket('udp4');
    cleanup.push(() => stranger.close());
    const answers: Buffer[] = [];
    stranger.on('message', (m) => answers.push(m));
    await new Promise<void>((r) => stranger.bind(0, LOOPBACK, r));
    const answeredBefore = reflector.counters.answered;
    const dropsBefore = rs.stats().drops;
    const datagram = (index: number) => {
      const d = Buffer.alloc(16 + 12 + 16);
      d[0] = 5; // control
      d.writeUInt32LE(index, 4);
      d.writeBigUInt64LE(1000n, 8);
      Buffer.from(encodeBindingRequest(randomBytes(8))).copy(d, 16);
      return d;
    };
    for (let i = 0; i < 5; i++) {
      stranger.send(datagram(0xdead_beef), rs.port, LOOPBACK);
      stranger.send(datagram(22), rs.port, LOOPBACK);
    }
    const drops = async () => {
      const d = rs.stats().drops;
      return (
        (d['unknown-index'] ?? 0) -
        (dropsBefore['unknown-index'] ?? 0) +
        (d['auth-failed'] ?? 0) -
        (dropsBefore['auth-failed'] ?? 0)
      );
    };
    for (let t = 0; t < 50 && (await drops()) < 10; t++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200));
    const after = rs.stats().drops;
    expect((after['unknown-index'] ?? 0) - (dropsBefore['unknown-index'] ?? 0)).toBe(5);
    expect((after['auth-failed'] ?? 0) - (dropsBefore['auth-failed'] ?? 0)).toBe(5);
    expect(reflector.counters.answered).toBe(answeredBefore);
    expect(answers).toEqual([]);
  });
});
