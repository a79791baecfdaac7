// Real libp2p hosts on 127.0.0.1 that know each other: each has its own directory, holding
// every host as a member (the membership gate admits only directory peers). For tests and
// benches of the overlay's libp2p parts; nothing here leaves loopback.
import { generateKeyPair } from '@libp2p/crypto/keys';
import { PeerDirectory, peerAnnotations } from '../../overlay/directory.ts';
import { createHost, type Host, type InboundCounters } from '../../overlay/host.ts';

export interface LoopbackHostsOptions {
  /** Which host runs the circuit relay server (none by default). */
  relayIndex?: number;
  /** Inbound counters for the first host. */
  inboundCounters?: InboundCounters;
  /** What each host announces in its directory entry (default: its listen addresses without /p2p). */
  announce?: (h: Host) => string[];
}

export async function loopbackHosts(n: number, opts: LoopbackHostsOptions = {}): Promise<Host[]> {
  const keys = await Promise.all(Array.from({ length: n }, () => generateKeyPair('Ed25519')));
  const dirs = keys.map(() => new PeerDirectory());
  const hosts = await Promise.all(
    keys.map((privateKey, i) =>
      createHost({
        privateKey,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        relay: i === opts.relayIndex,
        directory: dirs[i]!,
        gateCounters: { denied: {} },
        announceLoopback: true, // every host lives on 127.0.0.1
        ...(opts.inboundCounters && i === 0 ? { inboundCounters: opts.inboundCounters } : {}),
      }),
    ),
  );
  const announce = opts.announce ?? ((h: Host) => h.getMultiaddrs().map((m) => m.decapsulate('/p2p').toString()));
  for (const [i, h] of hosts.entries()) {
    for (const d of dirs) {
      d.upsertFromNode({
        name: `n${i}`,
        annotations: peerAnnotations({
          peerId: h.peerId.toString(),
          multiaddrs: announce(h),
          podCidrs: [`10.244.${i}.0/24`],
          site: `s${i}`,
          nodeIp: `192.0.2.${i + 1}`, // never contacted: only host-gw routes use it
        }),
      });
    }
  }
  return hosts;
}
