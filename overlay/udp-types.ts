// What the overlay needs from the native UDP data socket (dataplane/udp-session.ts). Kept
// structural so the overlay's session and probing logic does not depend on the native addon
// being built (type imports are erased); the agent hands it the real UdpDataSocket.
import type { Packet } from '../dataplane/types.ts';
import type { SessionKeys, UdpEndpoint } from '../dataplane/udp-session.ts';

export type { SessionKeys, UdpEndpoint };

export interface UdpSessionInfoLike {
  txCounter: bigint | number;
  rxPackets: number;
  /** -1 when nothing arrived yet. */
  lastRxAgeMs: number;
  createdAgeMs: number;
}

export interface DataSocketLike {
  readonly port: number;
  addSession(keys: SessionKeys, endpoint?: UdpEndpoint): void;
  setEndpoint(localIndex: number, endpoint: UdpEndpoint): void;
  removeSession(localIndex: number): void;
  send(localIndex: number, packets: Packet[]): number;
  sendControl(localIndex: number, message: Uint8Array, to?: UdpEndpoint): boolean;
  session(localIndex: number): UdpSessionInfoLike | undefined;
  /** Sends a UDP relay allocate datagram from this socket (overlay/udp-relay-path.ts). */
  sendRelayAllocate?(relay: UdpEndpoint, datagram: Uint8Array): boolean;
  /** Opens / closes an extra socket (birthday punching, overlay/birthday-punch.ts). */
  addSocket?(): { id: number; port: number };
  closeSocket?(id: number): boolean;
  /** Datagrams the socket dropped, by reason (refused before JS sees them). */
  stats?(): { drops: Record<string, number> };
}

export function endpointKey(ep: UdpEndpoint): string {
  return ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}
