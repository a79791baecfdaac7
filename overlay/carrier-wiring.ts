// The UDP carrier (overlay/udp-carrier.ts) wired to the peer sessions: packets it opens are
// counted on the peer's session and go to the forwarder; when UDP takes a peer over, the
// session's link goes to the forwarder, and when UDP loses a peer no stream tunnel carries,
// the link is taken back and the stream fallback comes up if the peer was in use.
import type { Packet } from '../dataplane/types.ts';
import type { ForwarderLike } from './overlay-types.ts';
import type { PeerSession, PeerSessions } from './peer-session.ts';
import { UdpCarrier, type UdpCarrierOptions } from './udp-carrier.ts';

export interface CarrierWiringDeps {
  /** The carrier's own options; its packet, change and stream hooks are this module's. */
  carrier: Omit<UdpCarrierOptions, 'onPackets' | 'onChange' | 'streamUp'>;
  sessions: PeerSessions;
  forwarder: Pick<ForwarderLike, 'detachLink' | 'receivePackets'>;
  /** Hands a session's link to the forwarder (a no-op when it already has it). */
  attach(session: PeerSession): void;
  /** Brings a stream tunnel to the node up. */
  connect(node: string): Promise<void>;
  /** UDP carrying the peer changed: its path may have changed. */
  onPathMaybeChanged(session: PeerSession): void;
  /** A peer with UDP traffic within this long gets the stream fallback when UDP loses it (default 120 s). */
  idleTimeoutMs?: number;
  stopped(): boolean;
}

export function openCarrier(deps: CarrierWiringDeps): UdpCarrier {
  const { sessions, forwarder, carrier: options } = deps;
  const log = options.log;
  let carrier: UdpCarrier | undefined;

  const onPackets = (node: string, packets: Packet[]): void => {
    const session = sessions.get(node);
    if (session !== undefined) {
      for (const p of packets) session.rxBytes += p.data.length;
      session.lastSeen = session.udpActivity = Date.now();
    }
    forwarder.receivePackets?.(node, packets);
  };

  /** UDP started or stopped carrying `node`, or its UDP path changed. */
  const onChange = (node: string): void => {
    const peer = options.directory.get(node);
    if (peer === undefined || deps.stopped()) return;
    const session = sessions.obtain(peer);
    if (carrier?.carries(node)) {
      deps.attach(session);
    } else if (session.preferred() === undefined) {
      // UDP lost the peer and no stream tunnel is up (idle-closed): detach so packets are
      // held, and bring the fallback up now if the peer was in use.
      if (session.attached) {
        session.attached = false;
        forwarder.detachLink(node);
      }
      if (Date.now() - session.udpActivity < (deps.idleTimeoutMs ?? 120_000)) {
        deps
          .connect(node)
          .catch((err: Error) => log.info({ peer: node, err: err.message }, 'stream fallback after UDP loss failed'));
      }
    }
    deps.onPathMaybeChanged(session);
  };

  carrier = new UdpCarrier({
    ...options,
    onPackets,
    onChange,
    streamUp: (node) => sessions.get(node)?.preferred() !== undefined,
  });
  return carrier;
}
