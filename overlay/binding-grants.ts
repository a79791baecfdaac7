// A relay node's UDP relay bindings (overlay/relay-binding.ts) granted to cluster members over
// libp2p; a member that leaves the directory loses its bindings.
import type { Logger } from 'pino';
import type { PeerDirectory } from './directory.ts';
import type { Host } from './host.ts';
import { RELAY_BINDING_PROTOCOL, RelayBindingService, type RelayLike } from './relay-binding.ts';

export function serveRelayBindings(
  host: Host,
  directory: PeerDirectory,
  relay: RelayLike,
  log: Logger,
): RelayBindingService {
  const service = new RelayBindingService({
    relay,
    // Membership is the directory's (a node that left is refused even on an open connection).
    isMember: (peerId) => directory.has(peerId),
    log: log.child({ component: 'udp-relay' }),
  });
  void host.handle(RELAY_BINDING_PROTOCOL, (stream, conn) => service.serve(stream, conn.remotePeer.toString()), {
    maxInboundStreams: 16,
  });
  directory.on('peer:removed', (peer) => {
    if (!relay.closed) service.forgetMember(peer.peerId);
  });
  service.start();
  return service;
}
