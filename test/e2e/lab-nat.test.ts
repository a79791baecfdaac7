// The lab's NAT kinds, checked without any agent: small UDP/TCP probes in node namespaces
// send to reflectors on the cloud site, which answer with the source they observed. Each
// kind must produce the mapping and filtering it claims, because the NAT matrix benchmark
// and the overlay's traversal tests rely on it:
//   masquerade   keeps the source port (while the tuple is free), the same for every destination
//   remap        another port, but the same for every destination, inside the node's port block
//   symmetric    a different random port per destination
//   udp-blocked  no UDP crosses the router either way; TCP does; the LAN still carries UDP
// and every kind lets in only what an inside socket has sent to.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../common/exec.ts';
import { listNetns, runPrefix } from '../../common/netns.ts';
import { buildNetwork, destroyNetwork, type LabNetwork, nodeNet, routerNet } from '../../lab/network.ts';
import { resolveTopology } from '../../lab/topology.ts';
import { UdpPeer } from './helpers/udp-peer-client.ts';

const tcpObserver = fileURLToPath(new URL('./helpers/tcp-observer.ts', import.meta.url));

const topology = resolveTopology(
  {
    nodesPerSite: 2,
    podsPerNode: 0,
    sites: [
      { name: 'cloud', tag: 'c', kind: 'public', firstPublicIp: '203.0.113.10' },
      { name: 'nat-m', tag: 'm', kind: 'nat', lan: '192.168.11.0/24', wanIp: '203.0.113.101', nat: 'masquerade' },
      { name: 'nat-r', tag: 'r', kind: 'nat', lan: '192.168.12.0/24', wanIp: '203.0.113.102', nat: 'remap' },
      { name: 'nat-s', tag: 's', kind: 'nat', lan: '192.168.13.0/24', wanIp: '203.0.113.103', nat: 'symmetric' },
      { name: 'nat-u', tag: 'u', kind: 'nat', lan: '192.168.14.0/24', wanIp: '203.0.113.104', nat: 'udp-blocked' },
    ],
  },
  {},
  'lab-nat test topology',
);

// Three reflectors: two ports on cloud-1, one on cloud-2 (another address).
const REFLECTORS = ['203.0.113.10:7000', '203.0.113.10:7001', '203.0.113.11:7000'];
const TCP_SERVER = { host: '203.0.113.10', port: 7100 };

function portOf(endpoint: string | null): number {
  return Number(endpoint?.split(':')[1]);
}

describe('lab NAT kinds (no agents: probes and reflectors)', () => {
  const prefix = runPrefix('emn');
  let net: LabNetwork | undefined;
  const peers: UdpPeer[] = [];
  const reflectors = new Map<string, UdpPeer>();
  const tcpServers: Array<ReturnType<typeof spawn>> = [];

  const peer = async (node: string, port: number, reflect = false): Promise<UdpPeer> => {
    const p = await UdpPeer.start(nodeNet(net!, node).netns, port, { reflect });
    peers.push(p);
    return p;
  };
  const wan = (site: string) => routerNet(net!, site).wanIp;
  const block = (site: string, node: string) => routerNet(net!, site).portBlocks.find((b) => b.node === node)!;
  /** The mapping each reflector sees for one socket. */
  const mappings = (p: UdpPeer) => Promise.all(REFLECTORS.map((r) => p.mappingSeenBy(r)));
  /** TCP: the source address:port the server observed, or null. */
  const tcpSource = async (node: string, localPort: number): Promise<string | null> => {
    const args = [
      process.execPath,
      tcpObserver,
      'connect',
      TCP_SERVER.host,
      String(TCP_SERVER.port),
      String(localPort),
    ];
    return run('ip', ['netns', 'exec', nodeNet(net!, node).netns, ...args]).then(
      (out) => out.trim(),
      () => null,
    );
  };

  beforeAll(async () => {
    net = await buildNetwork(topology, prefix);
    for (const r of REFLECTORS) {
      const [ip, port] = r.split(':');
      const node = net.nodes.find((n) => n.ip === ip)!.name;
      reflectors.set(r, await peer(node, Number(port), true));
    }
    const server = spawn(
      'ip',
      ['netns', 'exec', nodeNet(net, 'cloud-1').netns, process.execPath, tcpObserver, 'serve', String(TCP_SERVER.port)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    tcpServers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.stdout!.once('data', () => resolve());
      server.once('exit', (code) => reject(new Error(`tcp observer exited (${code})`)));
    });
  });

  afterAll(async () => {
    await Promise.all(peers.map((p) => p.stop()));
    for (const s of tcpServers) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
    if (net) await destroyNetwork(net);
    expect((await listNetns()).filter((n) => n.startsWith(prefix))).toEqual([]);
  });

  it('installs the rules of each kind on its router', async () => {
    const rules = (site: string) => run('ip', ['netns', 'exec', routerNet(net!, site).netns, 'iptables-save']);
    expect(await rules('nat-m')).toMatch(/-j MASQUERADE$/m);
    expect(await rules('nat-s')).toContain('-j MASQUERADE --random-fully');
    const remap = await rules('nat-r');
    expect(remap).toContain(`-s 192.168.12.11/32 -o wan0 -p udp -j SNAT --to-source 203.0.113.102:1024-33279`);
    expect(remap).toContain(`-s 192.168.12.12/32 -o wan0 -p tcp -j SNAT --to-source 203.0.113.102:33280-65535`);
    expect(await rules('nat-u')).toContain('-A FORWARD -i lan0 -o wan0 -p udp -j DROP');
  });

  it('masquerade: keeps the source port for every destination; a second node on the same tuple is moved', async () => {
    const m1 = await peer('nat-m-1', 41001);
    expect(await mappings(m1)).toEqual(REFLECTORS.map(() => `${wan('nat-m')}:41001`));
    // The same source port on another node behind the same NAT, to the same destination:
    // the tuple is taken, so MASQUERADE has to pick another port (why every node needs its own).
    const m2 = await peer('nat-m-2', 41001);
    const seen = await m2.mappingSeenBy(REFLECTORS[0]!);
    expect(seen).toMatch(new RegExp(`^${wan('nat-m').replaceAll('.', '\\.')}:\\d+$`));
    expect(portOf(seen)).not.toBe(41001);
  });

  it('remap: another port than the source, the same for every destination, inside the node’s own block', async () => {
    const public1 = new Set<string>();
    for (const [node, port] of [
      ['nat-r-1', 41101],
      ['nat-r-1', 41102],
      ['nat-r-2', 41101],
    ] as const) {
      const p = await peer(node, port);
      const seen = await mappings(p);
      expect(new Set(seen).size, `${node}:${port} → ${seen.join(', ')}`).toBe(1); // endpoint-independent
      const mapped = seen[0]!;
      expect(mapped.startsWith(`${wan('nat-r')}:`)).toBe(true);
      expect(portOf(mapped)).not.toBe(port);
      const { first, last } = block('nat-r', node);
      expect(portOf(mapped)).toBeGreaterThanOrEqual(first);
      expect(portOf(mapped)).toBeLessThanOrEqual(last);
      public1.add(mapped);
    }
    // Two sockets of one node, and two nodes with the same source port: three mappings.
    expect(public1.size).toBe(3);
    // TCP is remapped into the node's block as well.
    const tcp = await tcpSource('nat-r-2', 41103);
    expect(tcp?.startsWith(`${wan('nat-r')}:`)).toBe(true);
    expect(portOf(tcp)).not.toBe(41103);
    expect(portOf(tcp)).toBeGreaterThanOrEqual(block('nat-r', 'nat-r-2').first);
  });

  it('symmetric: a different random port for each destination', async () => {
    const s1 = await peer('nat-s-1', 41201);
    const seen = await mappings(s1);
    for (const m of seen) expect(m?.startsWith(`${wan('nat-s')}:`), String(m)).toBe(true);
    // Random ports out of ~64,500: a false failure of either check has odds below 1e-4.
    expect(new Set(seen).size, seen.join(', ')).toBe(REFLECTORS.length);
    expect(seen.map(portOf)).not.toContain(41201);
  });

  it('udp-blocked: no UDP crosses the router either way, TCP does, the LAN still carries UDP', async () => {
    const u1 = await peer('nat-u-1', 41301);
    expect(await u1.mappingSeenBy(REFLECTORS[0]!, 2000)).toBeNull();
    // Nothing arrived at any reflector from the site (not only: no answer came back).
    for (const r of reflectors.values()) expect(r.received.filter((d) => d.from.startsWith(wan('nat-u')))).toEqual([]);
    // Inbound: a cloud node sending at the router's address gets nothing through either.
    reflectors.get(REFLECTORS[0]!)!.send(`${wan('nat-u')}:41301`, 'inbound');
    expect(await u1.waitFor((d) => d.data === 'inbound', 1000)).toBeNull();
    // TCP passes, port-preserving like masquerade.
    expect(await tcpSource('nat-u-1', 41302)).toBe(`${wan('nat-u')}:41302`);
    // Inside the LAN, UDP flows.
    await peer('nat-u-2', 7000, true);
    expect(await u1.mappingSeenBy(`${nodeNet(net!, 'nat-u-2').ip}:7000`)).toBe(`${nodeNet(net!, 'nat-u-1').ip}:41301`);
  });

  it('every kind lets in only the endpoint an inside socket has sent to', async () => {
    const [friend, stranger] = [REFLECTORS[0]!, REFLECTORS[2]!];
    for (const [node, port] of [
      ['nat-m-1', 41401],
      ['nat-r-1', 41402],
      ['nat-s-1', 41403],
    ] as const) {
      const p = await peer(node, port);
      const mapped = await p.mappingSeenBy(friend);
      expect(mapped, node).not.toBeNull();
      reflectors.get(stranger)!.send(mapped!, `stranger to ${node}`);
      reflectors.get(friend)!.send(mapped!, `friend to ${node}`);
      expect(await p.waitFor((d) => d.data === `friend to ${node}`, 2000), `${node}: reply path`).not.toBeNull();
      // The stranger's datagram was sent first: had the NAT let it in, it would be here by now.
      expect(
        p.received.filter((d) => d.data.startsWith('stranger')),
        `${node}: filtering`,
      ).toEqual([]);
    }
  });

  /**
   * A naive hole punch: each side learns its mapping from a reflector, then both send to
   * the other's mapping every 100 ms for `ms`. True when both sides heard the other.
   */
  async function naivePunch(a: [string, number], b: [string, number], ms = 3000): Promise<boolean> {
    const [pa, pb] = await Promise.all([peer(...a), peer(...b)]);
    const [ma, mb] = await Promise.all([pa.mappingSeenBy(REFLECTORS[0]!), pb.mappingSeenBy(REFLECTORS[0]!)]);
    expect(ma && mb).toBeTruthy();
    const timer = setInterval(() => {
      pa.send(mb!, `punch from ${a[0]}`);
      pb.send(ma!, `punch from ${b[0]}`);
    }, 100);
    try {
      const [ga, gb] = await Promise.all([
        pa.waitFor((d) => d.data === `punch from ${b[0]}`, ms),
        pb.waitFor((d) => d.data === `punch from ${a[0]}`, ms),
      ]);
      return ga !== null && gb !== null;
    } finally {
      clearInterval(timer);
    }
  }

  it('a reflected mapping is enough to punch remap ↔ masquerade, not symmetric ↔ masquerade', async () => {
    expect(await naivePunch(['nat-r-2', 41501], ['nat-m-2', 41502])).toBe(true);
    expect(await naivePunch(['nat-s-2', 41503], ['nat-m-2', 41504])).toBe(false);
  });
});
