// Keeps a circuit-relay reservation on every relay in the directory, so peers behind NAT
// can be reached through any of them. The relay client refreshes a live reservation before
// it expires; this keeper re-makes reservations that vanished (relay restarted, connection
// lost) and makes new ones when relays join.

import { peerIdFromString } from '@libp2p/peer-id';
import type { Logger } from 'pino';
import { withPeer } from './addresses.ts';
import { withDeadline } from './deadline.ts';
import type { PeerInfo } from './directory.ts';
import type { Host } from './host.ts';
import { reservationStoreOf } from './libp2p-internals.ts';

export class ReservationKeeper {
  readonly #host: Host;
  readonly #relays: () => PeerInfo[];
  readonly #log: Logger;
  readonly #inFlight = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  /** Reservations made (including re-made after a loss). */
  made = 0;

  constructor(host: Host, relays: () => PeerInfo[], log: Logger) {
    this.#host = host;
    this.#relays = relays;
    this.#log = log;
  }

  start(intervalMs = 2000): void {
    this.check();
    this.#timer = setInterval(() => this.check(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  hasReservation(relayPeerId: string): boolean {
    return reservationStoreOf(this.#host).hasReservation(peerIdFromString(relayPeerId));
  }

  check(): void {
    const self = this.#host.peerId.toString();
    for (const relay of this.#relays()) {
      if (relay.peerId === self || this.#inFlight.has(relay.peerId)) continue;
      if (this.hasReservation(relay.peerId)) continue;
      this.#inFlight.add(relay.peerId);
      this.#reserve(relay)
        .catch((err: Error) => this.#log.warn({ relay: relay.node, err: err.message }, 'relay reservation failed'))
        .finally(() => this.#inFlight.delete(relay.peerId));
    }
  }

  async #reserve(relay: PeerInfo): Promise<void> {
    const peerId = peerIdFromString(relay.peerId);
    // Dial ourselves first: the relay client blacklists a relay for good after one dial
    // error, which would make a restarted relay unusable until our own restart.
    await withDeadline(10_000, 'relay dial', (signal) =>
      this.#host.dial(
        relay.publicAddrs.map((ma) => withPeer(ma, relay.peerId)),
        { signal },
      ),
    );
    await reservationStoreOf(this.#host).addRelay(peerId, 'configured');
    this.made++;
    this.#log.info({ relay: relay.node }, 'relay reservation made');
  }
}
