// Opens the node's UDP data socket for the overlay: dual-stack ('::', IPv4 as v4-mapped)
// where the host has IPv6, else IPv4 only. One port per node, by default the punch port
// (a different protocol, so the same number is free), so NATs see one mapping per node.
import type { Logger } from 'pino';
import { relayAllocateDatagram } from '../dataplane/udp-relay.ts';
import { UdpDataSocket } from '../dataplane/udp-session.ts';
import type { UdpSocketFactory, UdpSocketHandlers } from '../overlay/udp-carrier.ts';

export function udpSocketFactory(opts: {
  port: number;
  mtu: number;
  /** Where the socket is read (agent/readers.ts). */
  receiver: 'thread' | 'loop' | 'auto';
  log: Logger;
}): UdpSocketFactory {
  return {
    // The member side of UDP relays: allocate datagrams are built (HMAC) in the addon.
    allocateDatagram: relayAllocateDatagram,
    open(handlers: UdpSocketHandlers) {
      const common = {
        port: opts.port,
        mtu: opts.mtu,
        receiver: opts.receiver,
        ...handlers,
        onError: (err: Error) => opts.log.warn({ err: err.message }, 'UDP packet handler failed'),
      };
      let socket: UdpDataSocket;
      try {
        socket = UdpDataSocket.open({ bind: '::', ...common });
      } catch (err) {
        // EAFNOSUPPORT / EADDRNOTAVAIL: no IPv6 on this host.
        opts.log.info({ err: (err as Error).message }, 'UDP socket on :: failed, using IPv4 only');
        socket = UdpDataSocket.open({ bind: '0.0.0.0', ...common });
      }
      opts.log.info({ port: socket.port, mtu: socket.mtu }, 'UDP data socket open');
      return socket;
    },
  };
}
