// What a stranger can do to a node's libp2p host before any handshake: open TCP connections
// and say nothing. Real hosts on loopback; the strangers are plain sockets.
import { createConnection, type Socket } from 'node:net';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it } from 'vitest';
import { tcpPortOf } from '../../../overlay/addresses.ts';
import { PeerDirectory } from '../../../overlay/directory.ts';
import { createHost, type Host, type InboundCounters, isAnnounceable } from '../../../overlay/host.ts';
import { loopbackHosts } from '../../support/loopback-hosts.ts';

const members = (n: number, counters?: InboundCounters): Promise<Host[]> =>
  loopbackHosts(n, { announce: () => [], ...(counters ? { inboundCounters: counters } : {}) });

/** Opens `n` TCP connections from `localAddress` that never send a byte; resolves once all are accepted or refused. */
async function idleSockets(target: { port: number }, n: number, localAddress: string): Promise<Socket[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Socket>((resolve) => {
          const s = createConnection({ host: '127.0.0.1', port: target.port, localAddress });
          s.on('error', () => undefined);
          s.once('connect', () => resolve(s));
          s.once('close', () => resolve(s));
        }),
    ),
  );
}

describe('libp2p host: connections that never handshake', () => {
  let hosts: Host[] = [];
  let sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    sockets = [];
    await Promise.all(hosts.map((h) => h.stop()));
    hosts = [];
  });

  const portOf = (h: Host) => tcpPortOf(h.getMultiaddrs()[0]!)!;

  it('ten idle TCP connections do not keep a member from connecting', async () => {
    hosts = await members(2);
    const [a, b] = hosts as [Host, Host];
    sockets = await idleSockets({ port: portOf(a) }, 10, '127.0.0.1');
    // libp2p's default allowed 10 pending upgrades in all: this dial was refused for 10 s.
    const conn = await b.dial(a.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(4000) });
    expect(conn.remotePeer.toString()).toBe(a.peerId.toString());
  }, 20_000);

  it('one IP holds at most a few pending handshakes, so hundreds from it do not lock others out', async () => {
    const counters: InboundCounters = { refusedPendingPerIp: 0 };
    hosts = await members(2, counters);
    const [a, b] = hosts as [Host, Host];
    // 127.0.0.2 is another loopback source address: a second "IP" on one machine.
    sockets = await idleSockets({ port: portOf(a) }, 300, '127.0.0.2');
    await expect.poll(() => counters.refusedPendingPerIp, { timeout: 5000 }).toBeGreaterThanOrEqual(300 - 16);
    const conn = await b.dial(a.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(4000) });
    expect(conn.remotePeer.toString()).toBe(a.peerId.toString());
  }, 20_000);

  it('drops idle handshakes after a short timeout', async () => {
    hosts = await members(1);
    const [s] = await idleSockets({ port: portOf(hosts[0]!) }, 1, '127.0.0.1');
    const closed = await new Promise<number>((resolve) => {
      const started = performance.now();
      if (s!.destroyed) resolve(0);
      s!.once('close', () => resolve(performance.now() - started));
    });
    sockets = [s!];
    expect(closed).toBeLessThan(9000); // libp2p's default waited 10 s
  }, 20_000);
});

describe('announced addresses', () => {
  it('never announces loopback, link-local, unspecified or multicast addresses', () => {
    const ok = [
      '/ip4/192.168.1.2/tcp/4001',
      '/ip4/203.0.113.7/tcp/4001',
      '/ip6/fd00::2/tcp/4001',
      '/dns4/a.example/tcp/1',
    ];
    const bad = [
      '/ip4/127.0.0.1/tcp/4001',
      '/ip4/169.254.3.4/tcp/4001',
      '/ip4/0.0.0.0/tcp/4001',
      '/ip6/::1/tcp/4001',
      '/ip6/fe80::1/tcp/4001',
      '/ip6/::ffff:127.0.0.1/tcp/4001',
      '/ip4/224.0.0.1/tcp/4001',
    ];
    for (const a of ok) expect(isAnnounceable(multiaddr(a)), a).toBe(true);
    for (const a of bad) expect(isAnnounceable(multiaddr(a)), a).toBe(false);
  });

  it('a host listening on every address publishes none of its loopback ones', async () => {
    const h = await createHost({
      privateKey: await generateKeyPair('Ed25519'),
      listen: ['/ip4/0.0.0.0/tcp/0'],
      relay: false,
      directory: new PeerDirectory(),
      gateCounters: { denied: {} },
    });
    try {
      const addrs = h.getMultiaddrs().map(String);
      expect(addrs.filter((a) => a.startsWith('/ip4/127.'))).toEqual([]);
    } finally {
      await h.stop();
    }
  });
});
