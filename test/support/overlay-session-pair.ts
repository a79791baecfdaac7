// Two real libp2p hosts on loopback that know each other (membership gate), for the session
// protocol tests, and a data-socket double that records what the session layer installs
// (the real one is the native UdpDataSocket; here only the key agreement is under test).
import { generateKeyPair } from '@libp2p/crypto/keys';
import { pino } from 'pino';
import type { Packet } from '../../dataplane/types.ts';
import { PeerDirectory, peerAnnotations } from '../../overlay/directory.ts';
import { createHost, type Host } from '../../overlay/host.ts';
import type { DataSocketLike, SessionKeys, UdpEndpoint, UdpSessionInfoLike } from '../../overlay/udp-types.ts';

export class RecordingSocket implements DataSocketLike {
  readonly port: number;
  readonly sessions = new Map<number, { keys: SessionKeys; endpoint: UdpEndpoint | undefined; createdAt: number }>();
  readonly removed: number[] = [];
  txCounters = new Map<number, number>();
  constructor(port: number) {
    this.port = port;
  }
  addSession(keys: SessionKeys, endpoint?: UdpEndpoint): void {
    if (this.sessions.has(keys.localIndex)) throw new Error(`index ${keys.localIndex} already in use`);
    this.sessions.set(keys.localIndex, { keys, endpoint, createdAt: Date.now() });
  }
  setEndpoint(localIndex: number, endpoint: UdpEndpoint): void {
    const s = this.sessions.get(localIndex);
    if (s) s.endpoint = endpoint;
  }
  removeSession(localIndex: number): void {
    this.sessions.delete(localIndex);
    this.removed.push(localIndex);
  }
  send(_localIndex: number, packets: Packet[]): number {
    return packets.length;
  }
  sendControl(): boolean {
    return true;
  }
  session(localIndex: number): UdpSessionInfoLike | undefined {
    const s = this.sessions.get(localIndex);
    if (!s) return undefined;
    return {
      txCounter: this.txCounters.get(localIndex) ?? 0,
      rxPackets: 0,
      lastRxAgeMs: -1,
      createdAgeMs: Date.now() - s.createdAt,
    };
  }
}

export interface HostPair {
  hosts: [Host, Host];
  dirs: [PeerDirectory, PeerDirectory];
  names: [string, string];
  stop(): Promise<void>;
}

export async function loopbackHostPair(): Promise<HostPair> {
  const keys = await Promise.all([generateKeyPair('Ed25519'), generateKeyPair('Ed25519')]);
  const dirs: [PeerDirectory, PeerDirectory] = [new PeerDirectory(), new PeerDirectory()];
  const hosts = (await Promise.all(
    keys.map((privateKey, i) =>
      createHost({
        privateKey,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        relay: false,
        announceLoopback: true,
        directory: dirs[i]!,
        gateCounters: { denied: {} },
      }),
    ),
  )) as [Host, Host];
  const names: [string, string] = ['n0', 'n1'];
  for (const [i, h] of hosts.entries()) {
    for (const d of dirs) {
      d.upsertFromNode({
        name: names[i]!,
        annotations: peerAnnotations({
          peerId: h.peerId.toString(),
          multiaddrs: h.getMultiaddrs().map((m) => m.decapsulate('/p2p').toString()),
          podCidrs: [`10.244.${i}.0/24`],
          site: `s${i}`,
          // A node address (the directory refuses loopback); nothing dials it, the hosts talk on loopback.
          nodeIp: `198.51.100.${i + 1}`,
        }),
      });
    }
  }
  return {
    hosts,
    dirs,
    names,
    stop: async () => {
      await Promise.all(hosts.map((h) => h.stop()));
    },
  };
}

export const quietLogger = () => pino({ level: process.env.OVERLAY_TEST_LOG ?? 'silent' });
