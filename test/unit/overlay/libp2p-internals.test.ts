// overlay/libp2p-internals.ts reaches past libp2p's public API. These tests pin the libp2p
// versions it was written against and check, on real hosts over loopback, that every
// internal it uses is there and does what the overlay relies on: after a libp2p upgrade this
// file fails first, with what to re-check, instead of the overlay breaking at run time.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { Connection, Upgrader } from '@libp2p/interface';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { circuitAddr, ipPortToMultiaddr } from '../../../overlay/addresses.ts';
import type { Host } from '../../../overlay/host.ts';
import {
  dialTransport,
  internalsOf,
  rawConnectionOf,
  reservationStoreOf,
  WRITTEN_AGAINST,
  wrapUpgradeInbound,
} from '../../../overlay/libp2p-internals.ts';
import { socketToMultiaddrConnection } from '../../../overlay/socket-conn.ts';
import { loopbackHosts } from '../../support/loopback-hosts.ts';

const RECHECK =
  'internalsOf (the components service: upgrader, events, logger), dialTransport (transportManager.dial), ' +
  'wrapUpgradeInbound (upgrader.upgradeInbound), reservationStoreOf (the circuit relay transport ' +
  'reservationStore), rawConnectionOf (Connection.maConn), and the raw-socket upgrade of overlay/hole-punch.ts ' +
  'and overlay/splice-client.ts';

function installedVersion(pkg: string): string {
  const url = new URL(`../../../node_modules/${pkg}/package.json`, import.meta.url);
  return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
}

describe('libp2p internals: the versions the adapter was written against', () => {
  for (const [pkg, expected] of Object.entries(WRITTEN_AGAINST)) {
    it(`${pkg} is ${expected}`, () => {
      const installed = installedVersion(pkg);
      expect(
        installed,
        `${pkg} ${installed} is installed but overlay/libp2p-internals.ts was written against ${expected}: ` +
          `re-check ${RECHECK} against the new sources, then update WRITTEN_AGAINST`,
      ).toBe(expected);
    });
  }
});

describe('libp2p internals on real hosts', () => {
  // r relays, a holds a reservation on it, b reaches a through it.
  let r: Host;
  let a: Host;
  let b: Host;
  const opened: Connection[] = [];

  beforeAll(async () => {
    const hosts = await loopbackHosts(3, { relayIndex: 0, announce: (h) => h.getMultiaddrs().map(String) });
    [r, a, b] = hosts as [Host, Host, Host];
  }, 30_000);

  afterAll(async () => {
    for (const c of opened) await c.close().catch(() => {});
    await Promise.all([r, a, b].filter((h) => h !== undefined).map((h) => h.stop()));
  });

  it('exposes the host components: peer id, upgrader, event bus, logger, connection and transport managers', () => {
    const internals = internalsOf(a);
    expect(internals.peerId.toString()).toBe(a.peerId.toString());
    expect(typeof internals.upgrader.upgradeInbound).toBe('function');
    expect(typeof internals.upgrader.upgradeOutbound).toBe('function');
    expect(typeof internals.events.addEventListener).toBe('function');
    expect(typeof internals.logger.forComponent('edgemesh:test')).toBe('function');
    expect(typeof internals.connectionManager.openConnection).toBe('function');
    expect(typeof internals.transportManager.dial).toBe('function');
    expect(internals.transportManager.getTransports().length).toBeGreaterThanOrEqual(2);
  });

  it('finds the circuit relay reservation store, which makes and reports a reservation', async () => {
    const store = reservationStoreOf(a);
    expect(store.hasReservation(r.peerId)).toBe(false);
    await a.dial(r.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(5000) });
    await store.addRelay(r.peerId, 'configured');
    expect(store.hasReservation(r.peerId)).toBe(true);
    expect(reservationStoreOf(b).hasReservation(r.peerId)).toBe(false);
  }, 20_000);

  it('dials a relayed address straight on the transport manager', async () => {
    // Needs a's reservation on r (the test above).
    const ma = circuitAddr(r.getMultiaddrs()[0]!, r.peerId.toString(), a.peerId.toString());
    const conn = await dialTransport(b, ma, { signal: AbortSignal.timeout(10_000) });
    opened.push(conn);
    expect(conn.remotePeer.toString()).toBe(a.peerId.toString());
    expect(conn.status).toBe('open');
    expect(conn.remoteAddr.toString()).toContain('/p2p-circuit');
  }, 20_000);

  it('wraps upgradeInbound: the wrapper sees every inbound handshake', async () => {
    const seen: string[] = [];
    wrapUpgradeInbound(
      a,
      (original) =>
        ((maConn, opts) => {
          seen.push(maConn.remoteAddr.toString());
          return original(maConn, opts);
        }) as Upgrader['upgradeInbound'],
    );
    const conn = await b.dial(a.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(5000) });
    opened.push(conn);
    expect(conn.remotePeer.toString()).toBe(a.peerId.toString());
    expect(seen.length).toBeGreaterThanOrEqual(1);
  }, 20_000);

  it("finds a connection's raw socket, which reports the bytes read below the muxer", async () => {
    const conn = await b.dial(r.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(5000) });
    const raw = rawConnectionOf(conn);
    expect(raw).toBeDefined();
    let messages = 0;
    raw!.addEventListener('message', () => messages++);
    await b.services.ping.ping(r.peerId, { signal: AbortSignal.timeout(5000) });
    expect(messages).toBeGreaterThan(0);
  }, 20_000);

  it('upgrades a plain TCP socket on both ends, as the hole punch and the splice do', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      const client = net.connect(port, '127.0.0.1');
      await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
      const inbound = await accepted;
      const fromB = ipPortToMultiaddr('127.0.0.1', client.localPort!).encapsulate(`/p2p/${b.peerId}`);
      const toA = ipPortToMultiaddr('127.0.0.1', port).encapsulate(`/p2p/${a.peerId}`);
      const ia = internalsOf(a);
      const ib = internalsOf(b);
      // upgradeInbound hands the connection to the connection manager: it shows as connection:open.
      const openedOnA = new Promise<Connection>((resolve) => {
        const onOpen = (evt: CustomEvent<Connection>) => {
          if (!evt.detail.remoteAddr.equals(fromB)) return;
          ia.events.removeEventListener('connection:open', onOpen);
          resolve(evt.detail);
        };
        ia.events.addEventListener('connection:open', onOpen);
      });
      const signal = AbortSignal.timeout(10_000);
      const [outConn] = await Promise.all([
        ib.upgrader.upgradeOutbound(
          socketToMultiaddrConnection({
            socket: client,
            remoteAddr: toA,
            direction: 'outbound',
            log: ib.logger.forComponent('edgemesh:test'),
          }),
          { signal, initiator: true },
        ),
        ia.upgrader.upgradeInbound(
          socketToMultiaddrConnection({
            socket: inbound,
            remoteAddr: fromB,
            direction: 'inbound',
            log: ia.logger.forComponent('edgemesh:test'),
          }),
          { signal },
        ),
      ]);
      const inConn = await openedOnA;
      opened.push(outConn, inConn);
      expect(outConn.remotePeer.toString()).toBe(a.peerId.toString());
      expect(inConn.remotePeer.toString()).toBe(b.peerId.toString());
    } finally {
      server.close();
    }
  }, 20_000);
});
