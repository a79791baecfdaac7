// The forwarder's PeerLink for one peer's UDP session: packets go to UdpDataSocket.send()
// under the session's current transmit index. A rekey adds the new session to the socket
// and calls useSession() with its index; the old one keeps receiving until it is removed.
import { FrameDecoder } from './frame-codec.ts';
import type { Packet, PeerLink } from './types.ts';
import type { UdpDataSocket } from './udp-session.ts';

export class UdpSessionLink implements PeerLink {
  readonly socket: UdpDataSocket;
  #txIndex: number;
  #mtu: number;

  constructor(socket: UdpDataSocket, txIndex: number, mtu = socket.mtu) {
    this.socket = socket;
    this.#txIndex = txIndex;
    this.#mtu = Math.min(mtu, socket.mtu);
  }

  /** The localIndex whose session seals what this link sends. */
  get txIndex(): number {
    return this.#txIndex;
  }

  /** Switches transmission to another session on the same socket (the new half of a rekey). */
  useSession(localIndex: number): void {
    this.#txIndex = localIndex;
  }

  /** Largest inner packet: the path's tunnel MTU, never more than the socket seals. */
  get mtu(): number {
    return this.#mtu;
  }

  /** Lowers or raises the tunnel MTU for this peer (e.g. after the underlay path MTU changed). */
  setMtu(mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < 576) throw new RangeError(`tunnel MTU must be an integer ≥ 576, got ${mtu}`);
    this.#mtu = Math.min(mtu, this.socket.mtu);
  }

  sendPackets(packets: Packet[]): number {
    return this.socket.send(this.#txIndex, packets);
  }

  /** A frame (the stream path's unit) is unpacked and sent packet by packet; the forwarder prefers sendPackets. */
  send(frame: Uint8Array): boolean {
    try {
      const packets = new FrameDecoder().push(frame);
      return this.sendPackets(packets) === packets.length;
    } catch {
      return false;
    }
  }
}
