// A three-node overlay cluster on the NAT topology: relay (public), node A (site a behind
// NAT), node B (site b behind NAT), each an overlay-peer process, all sharing one directory.
// Every node punches from its own port, drawn and kept as the agent does; optionally a
// second node (a2) sits behind site A's NAT beside A.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Labels } from '../../overlay/annotations.ts';
import type { NodeLike } from '../../overlay/directory.ts';
import { peerAnnotations } from '../../overlay/directory.ts';
import { OverlayPeerProcess } from './overlay-peer-client.ts';
import { createNatTopology, type NatTopology } from './overlay-topology.ts';

export const LISTEN_PORT = 4001;
/** A fixed port for processes outside the cluster (the stranger); members draw their own. */
export const PUNCH_PORT = 4002;
/** The relay's UDP relay port when `udpRelay` is on. */
export const RELAY_UDP_PORT = 4003;
/** The relay's TCP splice port when `splice` is on. */
export const RELAY_SPLICE_PORT = 4004;

export interface OverlayCluster {
  topo: NatTopology;
  relay: OverlayPeerProcess;
  a: OverlayPeerProcess;
  b: OverlayPeerProcess;
  /** The second node behind site A's NAT (started only with `secondNodeA: true`). */
  a2: OverlayPeerProcess | undefined;
  /** A public node that is not a relay (started only with `publicPeer: true`). */
  pub: OverlayPeerProcess | undefined;
  nodes: NodeLike[];
  /** Kills the relay process and starts it again with the same key (a relay restart). */
  restartRelay(): Promise<void>;
  /** The last log lines of every peer, compacted (printed when a test fails). */
  logs(lines?: number): string;
  destroy(): Promise<void>;
}

export function compactLog(stderr: string, lines: number): string {
  return stderr
    .trim()
    .split('\n')
    .slice(-lines)
    .map((l) => {
      try {
        const { level, time, pid, hostname, msg, ...rest } = JSON.parse(l);
        return `${new Date(time).toISOString().slice(11, 23)} ${msg} ${JSON.stringify(rest)}`;
      } catch {
        return l;
      }
    })
    .join('\n');
}

export interface ClusterOptions {
  randomFullyB?: boolean;
  randomFullyA?: boolean;
  idleTimeoutMs?: number;
  autoPunch?: boolean;
  verify?: boolean;
  /** Also start a public, non-relay member ('pub', site 'cloud-2'). */
  publicPeer?: boolean;
  /** Also start a2, a second node behind site A's NAT (site 'site-a'). */
  secondNodeA?: boolean;
  /** Every node opens the native UDP data socket (on its punch port). */
  udp?: boolean;
  transport?: 'auto' | 'udp' | 'stream';
  udpRekeyAfterMs?: number;
  /** The relay runs a UDP relay (on RELAY_UDP_PORT) and members may use it (the udp-relayed rung). */
  udpRelay?: boolean;
  /** The relay runs a TCP splice (on RELAY_SPLICE_PORT): relayed stream tunnels move onto it. */
  splice?: boolean;
}

export async function createOverlayCluster(opts: ClusterOptions = {}): Promise<OverlayCluster> {
  const topo = await createNatTopology({
    ...(opts.randomFullyB === undefined ? {} : { randomFullyB: opts.randomFullyB }),
    ...(opts.randomFullyA === undefined ? {} : { randomFullyA: opts.randomFullyA }),
    ...(opts.secondNodeA === undefined ? {} : { secondNodeA: opts.secondNodeA }),
  });
  const dir = await mkdtemp(join(tmpdir(), `${topo.prefix}keys-`));
  const peers: OverlayPeerProcess[] = [];
  const destroy = async () => {
    await Promise.all(peers.map((p) => p.stop().catch(() => {})));
    await topo.destroy();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const listen = [`/ip4/0.0.0.0/tcp/${LISTEN_PORT}`];
    const extra = {
      ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
      ...(opts.autoPunch === undefined ? {} : { autoPunch: opts.autoPunch }),
      ...(opts.verify === undefined ? {} : { verify: opts.verify }),
      ...(opts.udp === undefined ? {} : { udp: opts.udp }),
      ...(opts.transport === undefined ? {} : { transport: opts.transport }),
      ...(opts.udpRekeyAfterMs === undefined ? {} : { udpRekeyAfterMs: opts.udpRekeyAfterMs }),
      ...(opts.udpRelay ? { udpRelayPort: RELAY_UDP_PORT } : {}),
      ...(opts.splice ? { splicePort: RELAY_SPLICE_PORT } : {}),
    };
    const relay = new OverlayPeerProcess(topo.relay.ns, {
      name: 'relay',
      site: 'cloud',
      keyPath: join(dir, 'relay.key'),
      listen,
      announce: [`/ip4/${topo.relay.ip}/tcp/${LISTEN_PORT}`],
      relay: true,
      ...extra,
    });
    peers.push(relay);
    const a = new OverlayPeerProcess(topo.siteA.node, {
      name: 'a',
      site: 'site-a',
      keyPath: join(dir, 'a.key'),
      listen,
      announce: [`/ip4/${topo.siteA.nodeIp}/tcp/${LISTEN_PORT}`],
      relay: false,
      ...extra,
    });
    peers.push(a);
    const a2 = topo.a2
      ? new OverlayPeerProcess(topo.a2.ns, {
          name: 'a2',
          site: 'site-a',
          keyPath: join(dir, 'a2.key'),
          listen,
          announce: [`/ip4/${topo.a2.ip}/tcp/${LISTEN_PORT}`],
          relay: false,
          ...extra,
        })
      : undefined;
    if (a2) peers.push(a2);
    const b = new OverlayPeerProcess(topo.siteB.node, {
      name: 'b',
      site: 'site-b',
      keyPath: join(dir, 'b.key'),
      listen,
      announce: [`/ip4/${topo.siteB.nodeIp}/tcp/${LISTEN_PORT}`],
      relay: false,
      ...extra,
    });
    peers.push(b);
    const pub = opts.publicPeer
      ? new OverlayPeerProcess(topo.pub.ns, {
          name: 'pub',
          site: 'cloud-2',
          keyPath: join(dir, 'pub.key'),
          listen,
          announce: [`/ip4/${topo.pub.ip}/tcp/${LISTEN_PORT}`],
          relay: false,
          ...extra,
        })
      : undefined;
    if (pub) peers.push(pub);
    await Promise.all(peers.map((p) => p.ready()));
    const node = (p: OverlayPeerProcess, nodeIp: string, podCidr: string, isRelay: boolean): NodeLike => ({
      name: p.config.name,
      labels: isRelay ? { [Labels.relay]: 'true' } : {},
      annotations: peerAnnotations({
        peerId: p.peerId,
        multiaddrs: p.config.announce ?? [],
        podCidrs: [podCidr],
        site: p.config.site,
        nodeIp,
        punchPort: p.punchPort,
        ...(isRelay && opts.udpRelay ? { relayPort: RELAY_UDP_PORT } : {}),
      }),
    });
    const nodes = [
      node(relay, topo.relay.ip, '10.244.0.0/24', true),
      node(a, topo.siteA.nodeIp, '10.244.1.0/24', false),
      node(b, topo.siteB.nodeIp, '10.244.2.0/24', false),
      ...(a2 && topo.a2 ? [node(a2, topo.a2.ip, '10.244.4.0/24', false)] : []),
      ...(pub ? [node(pub, topo.pub.ip, '10.244.3.0/24', false)] : []),
    ];
    await Promise.all(peers.map((p) => p.request('directory', { nodes })));
    // Edge nodes are reachable only once they hold a reservation on the relay.
    for (const p of [a, b, ...(a2 ? [a2] : [])]) {
      await waitFor(`${p.config.name} relay reservation`, async () => {
        const s = await p.request<{ reservations: string[] }>('stats');
        return s.reservations.includes('relay');
      });
    }
    const logs = (lines = 40) => peers.map((p) => `---- ${p.config.name}\n${compactLog(p.stderr, lines)}`).join('\n');
    const cluster: OverlayCluster = {
      topo,
      relay,
      a,
      b,
      a2,
      pub,
      nodes,
      logs,
      destroy,
      restartRelay: async () => {
        const old = cluster.relay;
        old.child.kill('SIGKILL');
        await new Promise<void>((r) =>
          old.child.exitCode !== null || old.child.signalCode !== null ? r() : old.child.once('exit', () => r()),
        );
        const fresh = new OverlayPeerProcess(topo.relay.ns, old.config);
        peers.push(fresh);
        await fresh.ready();
        if (fresh.peerId !== old.peerId) throw new Error('relay came back with another peer ID');
        await fresh.request('directory', { nodes });
        cluster.relay = fresh;
      },
    };
    return cluster;
  } catch (err) {
    await destroy();
    throw err;
  }
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}
