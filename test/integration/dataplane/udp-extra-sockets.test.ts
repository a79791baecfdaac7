// The session engine's extra sockets (addSocket), as birthday punching uses them: on
// loopback, node A opens extra sockets, a control message sent from one of them reaches B
// from that socket's port, B's answer arrives on it (the record names the socket), and once
// the session's endpoint names the socket its data leaves from it and B's data comes back
// on it. Closing the socket leaves the session without an endpoint; its id is refused and
// counted. Every receiver mode (reader thread, event loop, auto); the bound on sockets holds.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { Packet } from '../../../dataplane/types.ts';
import { VNET_HDR_LEN } from '../../../dataplane/types.ts';
import { UdpDataSocket, type UdpEndpoint } from '../../../dataplane/udp-session.ts';

interface Seen {
  control: Array<{ index: number; text: string; from: UdpEndpoint }>;
  packets: Array<{ index: number; bytes: number; from: UdpEndpoint }>;
}

function open(receiver: 'thread' | 'loop' | 'auto'): { socket: UdpDataSocket; seen: Seen } {
  const seen: Seen = { control: [], packets: [] };
  const socket = UdpDataSocket.open({
    bind: '127.0.0.1',
    port: 0,
    receiver,
    onControl: (index, message, from) => seen.control.push({ index, text: Buffer.from(message).toString(), from }),
    onPackets: (index, packets, from) => {
      for (const p of packets) seen.packets.push({ index, bytes: p.data.length, from });
    },
  });
  return { socket, seen };
}

/** A minimal IPv4/UDP packet (the engine checks nothing inside plain packets but their size). */
function packet(len: number): Packet {
  const data = new Uint8Array(len);
  data[0] = 0x45;
  data[2] = len >> 8;
  data[3] = len & 0xff;
  data[9] = 17;
  return { vnet: new Uint8Array(VNET_HDR_LEN), data };
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const opened: UdpDataSocket[] = [];
afterEach(() => {
  for (const s of opened.splice(0)) s.close();
});

describe.each(['thread', 'loop', 'auto'] as const)(
  'extra sockets of the UDP session engine (%s receiver)',
  (receiver) => {
    it('sends and receives control and data on an extra socket, and forgets it when closed', async () => {
      const a = open(receiver);
      const b = open(receiver);
      opened.push(a.socket, b.socket);
      const k1 = randomBytes(32);
      const k2 = randomBytes(32);
      a.socket.addSession({ localIndex: 11, remoteIndex: 22, txKey: k1, rxKey: k2 });
      b.socket.addSession({ localIndex: 22, remoteIndex: 11, txKey: k2, rxKey: k1 });
      const extras = [a.socket.addSocket(), a.socket.addSocket(), a.socket.addSocket()];
      expect(new Set(extras.map((e) => e.id)).size).toBe(3);
      expect(extras.every((e) => e.id > 0 && e.port > 0 && e.port !== a.socket.port)).toBe(true);
      expect(a.socket.stats().extraSockets).toBe(3);
      const mid = extras[1]!;

      // A → B from the middle extra socket: B sees its port.
      expect(
        a.socket.sendControl(11, Buffer.from('probe'), { ip: '127.0.0.1', port: b.socket.port, socket: mid.id }),
      ).toBe(true);
      await until('B hears the probe', () => b.seen.control.length === 1);
      expect(b.seen.control[0]).toEqual({ index: 22, text: 'probe', from: { ip: '127.0.0.1', port: mid.port } });

      // B answers where it came from: A's record names the extra socket it arrived on.
      expect(b.socket.sendControl(22, Buffer.from('reply'), b.seen.control[0]!.from)).toBe(true);
      await until('A hears the reply', () => a.seen.control.length === 1);
      expect(a.seen.control[0]).toEqual({
        index: 11,
        text: 'reply',
        from: { ip: '127.0.0.1', port: b.socket.port, socket: mid.id },
      });

      // A's session adopts the endpoint with its socket: data leaves from the extra port.
      a.socket.setEndpoint(11, a.seen.control[0]!.from);
      b.socket.setEndpoint(22, { ip: '127.0.0.1', port: mid.port });
      expect(a.socket.send(11, [packet(100), packet(200)])).toBe(2);
      await until('B gets the data', () => b.seen.packets.length === 2);
      expect(b.seen.packets.map((p) => p.from.port)).toEqual([mid.port, mid.port]);
      expect(b.socket.send(22, [packet(300)])).toBe(1);
      await until('A gets the data on the extra socket', () => a.seen.packets.length === 1);
      expect(a.seen.packets[0]).toMatchObject({ index: 11, bytes: 300 });
      // Bursts on the extra socket arrive whole; under 'auto' they hand receiving to the thread.
      for (let burst = 0; burst < 3; burst++) {
        expect(
          b.socket.send(
            22,
            Array.from({ length: 32 }, () => packet(400)),
          ),
        ).toBe(32);
        await until(`A gets burst ${burst + 1}`, () => a.seen.packets.length === 1 + 32 * (burst + 1));
      }
      if (receiver === 'auto') expect(a.socket.stats().receiverHandoffs).toBeGreaterThan(0);
      a.seen.packets.length = 1;
      // A keepalive to the session's endpoint (no `to`) leaves from the extra socket too.
      expect(a.socket.sendControl(11, Buffer.from('keepalive'))).toBe(true);
      await until('B hears the keepalive', () => b.seen.control.length === 2);
      expect(b.seen.control[1]!.from.port).toBe(mid.port);

      // Closing the socket: the session has no endpoint, the id is refused and counted.
      expect(a.socket.closeSocket(mid.id)).toBe(true);
      expect(a.socket.closeSocket(mid.id)).toBe(false);
      expect(a.socket.stats().extraSockets).toBe(2);
      expect(a.socket.send(11, [packet(100)])).toBe(0);
      expect(a.socket.stats().drops['no-endpoint']).toBe(1);
      expect(a.socket.sendControl(11, Buffer.from('x'), { ip: '127.0.0.1', port: b.socket.port, socket: mid.id })).toBe(
        false,
      );
      expect(a.socket.stats().drops['no-socket']).toBe(1);
      expect(() => a.socket.setEndpoint(11, { ip: '127.0.0.1', port: b.socket.port, socket: mid.id })).toThrow(
        /ENOENT/,
      );
      // The other extra sockets still work; the main socket is untouched.
      expect(
        a.socket.sendControl(11, Buffer.from('other'), { ip: '127.0.0.1', port: b.socket.port, socket: extras[2]!.id }),
      ).toBe(true);
      expect(a.socket.sendControl(11, Buffer.from('main'), { ip: '127.0.0.1', port: b.socket.port })).toBe(true);
      await until('B hears both', () => b.seen.control.length === 4);
      expect(b.seen.control.slice(2).map((c) => [c.text, c.from.port])).toEqual([
        ['other', extras[2]!.port],
        ['main', a.socket.port],
      ]);
      expect(b.socket.stats().drops).toEqual({});
    });
  },
);

describe('the bound on extra sockets', () => {
  it('refuses the 1025th extra socket, and takes one again after a close', () => {
    const a = open('thread');
    opened.push(a.socket);
    const ids: number[] = [];
    for (let i = 0; i < 1024; i++) ids.push(a.socket.addSocket().id);
    expect(new Set(ids).size).toBe(1024);
    expect(() => a.socket.addSocket()).toThrow(/ENOSPC/);
    expect(a.socket.closeSocket(ids[500]!)).toBe(true);
    expect(a.socket.addSocket().id).toBe(ids[500]);
  });
});
