// The UDP session data path against the stream path, between two forwarders: the agent's
// data-plane parts in test scripts (no libp2p, no Kubernetes), not the agent; the product's
// figures come from the lab bench (bench/lab-bed.ts).
// Two namespaces joined by a veth; each runs one dataplane node process (a real TUN +
// Forwarder): either with a UDP session (test/integration/dataplane/udp-node.ts) or with the
// frame codec over a TCP socket, the stream path (test/support/forwarder-node.ts); the UDP
// path twice, with the TUN and the socket read by reader threads (udp) or on the event loop
// while idle and by the threads under load (udp-auto, the default). The scripts are spawned,
// not imported. Measures per path: iperf3 TCP single stream, forwarder
// CPU seconds per GB (both processes), ping RTT p50/p99, iperf3 UDP loss at a fixed offered
// rate; and the AEADs' seal/open ns per byte with the Node binary's OpenSSL.
// With --pods, iperf3 and ping run in a pod namespace behind each node (a veth, routed by
// the node's namespace), as pods reach an agent when deployed; with --nebula, nebula runs
// between the same two node namespaces (the bench's comparison row, no pods) and is
// measured in the same interleaved rounds. --paths picks the paths (and receive/TUN-reader
// variants, see VARIANTS).
// Run (root): node bench/udp-session.ts [--seconds 5] [--rounds 1] [--udp-rate 500M] [--scavenger-mb 8]
//   [--pods] [--nebula] [--paths stream,udp,udp-auto] [--pings 300] [--crossings]
// --crossings: after each path's pings, 100 more under tcpdump on both nodes' tunnel device
// and veth, to split the RTT into each node's crossings (bench/lib/crossings.ts).
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { missingAgentEnv } from '../bin/agent-runtime.js';
import { run } from '../common/exec.ts';
import { ipBatch } from '../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../common/netns.ts';
import { cryptoBench } from '../dataplane/udp-session.ts';
import { startNebula } from './baselines/nebula.ts';
import type { Scenario } from './baselines/pair.ts';
import { totalCpuSeconds } from './lib/cpu.ts';
import { type CrossingEnd, formatCrossings, traceCrossings } from './lib/crossings.ts';
import { iperfClient, pingRtt, startIperfServer, stopProcess } from './lib/iperf.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '1' },
    'udp-rate': { type: 'string', default: '500M' },
    'scavenger-mb': { type: 'string', default: '8' },
    pods: { type: 'boolean', default: false },
    nebula: { type: 'boolean', default: false },
    paths: { type: 'string', default: 'stream,udp,udp-auto' },
    pings: { type: 'string', default: '300' },
    crossings: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const scavengerMb = Number(values['scavenger-mb']);

const udpNodeScript = fileURLToPath(new URL('../test/integration/dataplane/udp-node.ts', import.meta.url));
const streamNodeScript = fileURLToPath(new URL('../test/support/forwarder-node.ts', import.meta.url));

const prefix = runPrefix('embu');
const nsA = `${prefix}a`;
const nsB = `${prefix}b`;
const podA = `${prefix}pa`;
const podB = `${prefix}pb`;
const LINK_A = '192.168.79.1';
const LINK_B = '192.168.79.2';
const POD_A = '10.221.0.1';
const POD_B = '10.222.0.1';
const UDP_PORT = 7200;

const POD_A_IP = '10.221.0.5';
const POD_B_IP = '10.222.0.5';

/**
 * stream: frames over TCP; nebula: the comparison; the others are UDP sessions, with the
 * node arguments that pick where datagrams are received (a reader thread or the event loop)
 * and where the TUN is read.
 */
const VARIANTS: Record<string, string[]> = {
  udp: ['--receiver', 'thread', '--tun-reader', 'thread'],
  'udp-auto': ['--receiver', 'auto', '--tun-reader', 'auto'],
  'udp-loop': ['--receiver', 'loop', '--tun-reader', 'loop'],
  'udp-rxloop': ['--receiver', 'loop', '--tun-reader', 'auto'],
  // TUN writes yield the CPU every 32 packets (TunDevice writeBurst): measured, not a win.
  'udp-yield32': ['--receiver', 'thread', '--tun-reader', 'thread', '--tun-write-burst', '32'],
};
type Path = string;
const PATHS: readonly Path[] = [
  ...String(values.paths)
    .split(',')
    .filter(Boolean)
    .map((p) => {
      if (p !== 'stream' && !VARIANTS[p])
        throw new Error(`unknown path ${p} (stream, ${Object.keys(VARIANTS).join(', ')})`);
      return p;
    }),
  ...(values.nebula ? ['nebula'] : []),
  ...(values.pods ? ['kernel-pods'] : []),
];

/** One node process and its stdin/stdout line protocol ("<id> <cmd> [arg]" → JSON lines). */
class NodeProcess {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  private nextId = 1;
  private readonly waiting = new Map<string, (m: { result?: unknown; error?: string }) => void>();
  private readonly events: string[] = [];
  stderr = '';

  constructor(ns: string, script: string, args: string[]) {
    const flags = scavengerMb > 0 ? [`--scavenger-max-new-space-capacity-mb=${scavengerMb}`] : [];
    // The agent's malloc settings (bin/agent-runtime.js), as its forwarder runs under them.
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...flags, script, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...missingAgentEnv(process.env) },
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-2000);
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as { id?: string; event?: string; result?: unknown; error?: string };
      if (m.event) this.events.push(m.event);
      else if (m.id) {
        this.waiting.get(m.id)?.(m);
        this.waiting.delete(m.id);
      }
    });
    this.ready = this.waitFor('ready');
  }

  async waitFor(event: string, timeoutMs = 30_000): Promise<void> {
    const start = Date.now();
    while (!this.events.includes(event)) {
      if (Date.now() - start > timeoutMs || this.child.exitCode !== null)
        throw new Error(`no ${event} from node: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  command<T>(cmd: string, arg?: string): Promise<T> {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (m) => (m.error ? reject(new Error(m.error)) : resolve(m.result as T)));
      this.child.stdin!.write(`${id} ${cmd}${arg ? ` ${arg}` : ''}\n`);
    });
  }

  async cpuSeconds(): Promise<number> {
    return (await this.command<{ cpuSeconds: number }>('stats')).cpuSeconds;
  }
}

const tunName = (path: Path, round: number) => `${prefix}${PATHS.indexOf(path)}r${round}`;

/** 100 pings under tcpdump on both nodes: each node's share of the RTT. */
async function crossings(name: string, client: string, target: string, [tunA, tunB]: [string, string]): Promise<void> {
  const a: CrossingEnd = { netns: nsA, tun: tunA, underlay: `${prefix}va` };
  const b: CrossingEnd = { netns: nsB, tun: tunB, underlay: `${prefix}vb` };
  const trace = await traceCrossings(a, b, 'udp');
  await pingRtt(client, target, 100);
  console.log(formatCrossings(name, await trace.stop()));
}

async function startNodes(path: Path, round: number): Promise<[NodeProcess, NodeProcess]> {
  const tun = tunName(path, round);
  const node = (me: string, peer: string, peerPod: string) => [
    ...['--tun', tun, '--address', `${me}/32`, '--local', `${me.replace(/\.1$/, '.0')}/24`],
    ...['--peer', peer, '--peer-cidr', `${peerPod.replace(/\.1$/, '.0')}/24`, '--mtu', '1400'],
  ];
  if (path === 'stream') {
    const b = new NodeProcess(nsB, streamNodeScript, [...node(POD_B, 'nodeA', POD_A), '--listen', `${LINK_B}:7000`]);
    await b.ready;
    const a = new NodeProcess(nsA, streamNodeScript, [...node(POD_A, 'nodeB', POD_B), '--connect', `${LINK_B}:7000`]);
    await a.ready;
    await Promise.all([a.waitFor('link-up'), b.waitFor('link-up')]);
    return [a, b];
  }
  const args = ['--bind', '0.0.0.0', '--port', String(UDP_PORT), ...VARIANTS[path]!];
  const a = new NodeProcess(nsA, udpNodeScript, [...node(POD_A, 'nodeB', POD_B), ...args]);
  const b = new NodeProcess(nsB, udpNodeScript, [...node(POD_B, 'nodeA', POD_A), ...args]);
  await Promise.all([a.ready, b.ready]);
  const ab = randomBytes(32).toString('hex');
  const ba = randomBytes(32).toString('hex');
  const session = (local: number, remote: number, tx: string, rx: string, ip: string) =>
    JSON.stringify({ localIndex: local, remoteIndex: remote, txKey: tx, rxKey: rx, endpoint: { ip, port: UDP_PORT } });
  await a.command('add-session', session(1, 2, ab, ba, LINK_B));
  await b.command('add-session', session(2, 1, ba, ab, LINK_A));
  await a.command('use-session', JSON.stringify({ localIndex: 1 }));
  await b.command('use-session', JSON.stringify({ localIndex: 2 }));
  return [a, b];
}

/** Datagrams the kernel dropped on full UDP receive buffers in `ns` (the iperf3 server's, there). */
async function udpReceiveBufferErrors(ns: string): Promise<number> {
  const snmp = await run('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp']);
  const [names, nums] = snmp.split('\n').filter((l) => l.startsWith('Udp:'));
  const i = names!.split(/\s+/).indexOf('RcvbufErrors');
  return Number(nums!.split(/\s+/)[i]);
}

interface NodeStats {
  tun: { rxPackets: number; txPackets: number };
  forwarder: { drops: Record<string, number> };
  udp?: { drops: Record<string, number> };
}

interface Sample {
  gbps: number;
  cpuPerGB: number;
  p50: number;
  p99: number;
  udpLoss: number;
}

/** A baseline (no edgemesh node processes): TCP, RTT and UDP loss between its namespaces. */
async function measureBaseline(name: string, s: Scenario, round: number, tuns?: [string, string]): Promise<Sample> {
  const server = await startIperfServer(s.serverNetns);
  try {
    const cpu0 = totalCpuSeconds(s.forwarderPids());
    const tcp = await iperfClient({ netns: s.clientNetns, server: s.target, seconds });
    const cpu = totalCpuSeconds(s.forwarderPids()) - cpu0;
    const rtt = await pingRtt(s.clientNetns, s.target, Number(values.pings));
    if (values.crossings && tuns) await crossings(name, s.clientNetns, s.target, tuns);
    const rcvbuf0 = await udpReceiveBufferErrors(s.serverNetns);
    const udp = await iperfClient({
      netns: s.clientNetns,
      server: s.target,
      seconds,
      udpRate: String(values['udp-rate']),
    });
    const rcvbuf = (await udpReceiveBufferErrors(s.serverNetns)) - rcvbuf0;
    console.log(
      `[bench] ${name} round ${round + 1}: TCP ${tcp.gbps.toFixed(2)} Gbit/s, RTT p50 ${rtt.p50Ms} p99 ${rtt.p99Ms} ms, ` +
        `UDP lost ${udp.lossPercent?.toFixed(1)} % (receive-buffer overflows ${rcvbuf})`,
    );
    return {
      gbps: tcp.gbps,
      cpuPerGB: cpu / ((tcp.gbps * seconds) / 8),
      p50: rtt.p50Ms,
      p99: rtt.p99Ms,
      udpLoss: udp.lossPercent ?? 0,
    };
  } finally {
    await stopProcess(server);
  }
}

/** nebula between the node namespaces, as the bench's comparison bed runs it (no pods). */
async function measureNebula(round: number): Promise<Sample> {
  const neb = await startNebula({ a: nsA, b: nsB, underlayA: LINK_A, underlayB: LINK_B, destroy: async () => {} });
  try {
    const tag = nsA.slice(0, 6).replace(/[^a-z0-9]/g, ''); // bench/baselines/nebula.ts names its devices so
    return await measureBaseline('nebula', neb.scenario, round, [`neb${tag}a`, `neb${tag}b`]);
  } finally {
    await neb.stop();
  }
}

/** Pod to pod routed by the two node namespaces over the veth, no tunnel: the kernel's limit with pods. */
async function measureKernelPods(round: number): Promise<Sample> {
  const routes = [
    [nsA, `${POD_B_IP}/32 via ${LINK_B}`],
    [nsB, `${POD_A_IP}/32 via ${LINK_A}`],
  ] as const;
  for (const [ns, r] of routes) await ipBatch([`route add ${r}`], { netns: ns });
  try {
    const scenario = {
      name: 'kernel',
      clientNetns: podA,
      serverNetns: podB,
      target: POD_B_IP,
      forwarderPids: () => [],
    };
    return await measureBaseline('kernel-pods', scenario, round);
  } finally {
    for (const [ns, r] of routes) await ipBatch([`route del ${r}`], { netns: ns }).catch(() => '');
  }
}

async function measure(path: Path, round: number): Promise<Sample> {
  if (path === 'nebula') return measureNebula(round);
  if (path === 'kernel-pods') return measureKernelPods(round);
  const [a, b] = await startNodes(path, round);
  // With pods, the iperf3 ends and ping sit behind the nodes; without, in the nodes' namespaces.
  const [client, serverNs, target] = values.pods ? [podA, podB, POD_B_IP] : [nsA, nsB, POD_B];
  const server = await startIperfServer(serverNs);
  try {
    const cpu0 = (await a.cpuSeconds()) + (await b.cpuSeconds());
    const tcp = await iperfClient({ netns: client, server: target, seconds });
    const cpu = (await a.cpuSeconds()) + (await b.cpuSeconds()) - cpu0;
    console.log(`[bench] ${path} round ${round + 1}: TCP ${tcp.gbps.toFixed(2)} Gbit/s`);
    const pingCpu0 = (await a.cpuSeconds()) + (await b.cpuSeconds());
    const rtt = await pingRtt(client, target, Number(values.pings));
    const pingCpu = (await a.cpuSeconds()) + (await b.cpuSeconds()) - pingCpu0;
    // Each ping crosses each node twice (request and reply): CPU per crossing at an idle rate.
    const perCrossing = (pingCpu / Number(values.pings) / 4) * 1e6;
    console.log(`[bench] ${path} round ${round + 1}: ping CPU ${perCrossing.toFixed(0)} µs per packet per node`);
    console.log(`[bench] ${path} round ${round + 1}: RTT p50 ${rtt.p50Ms} ms, p99 ${rtt.p99Ms} ms`);
    if (values.crossings) await crossings(path, client, target, [tunName(path, round), tunName(path, round)]);
    const before = await Promise.all([a.command<NodeStats>('stats'), b.command<NodeStats>('stats')]);
    const rcvbuf0 = await udpReceiveBufferErrors(serverNs);
    const udp = await iperfClient({ netns: client, server: target, seconds, udpRate: String(values['udp-rate']) });
    const rcvbuf = (await udpReceiveBufferErrors(serverNs)) - rcvbuf0;
    const after = await Promise.all([a.command<NodeStats>('stats'), b.command<NodeStats>('stats')]);
    // where packets went missing: read from A's TUN, written into B's, and what each side counted
    const moved = (i: 0 | 1, f: (s: NodeStats) => number) => f(after[i]) - f(before[i]);
    const drops = (s: NodeStats) => JSON.stringify({ ...s.forwarder.drops, ...s.udp?.drops });
    console.log(
      `[bench] ${path} round ${round + 1}: UDP at ${values['udp-rate']} lost ${udp.lossPercent?.toFixed(1)} % ` +
        `(A's TUN read ${moved(0, (s) => s.tun.rxPackets)}, B's TUN written ${moved(1, (s) => s.tun.txPackets)}; ` +
        `drops A ${drops(after[0])} B ${drops(after[1])}; UDP receive-buffer overflows in B's namespace ${rcvbuf})`,
    );
    return {
      gbps: tcp.gbps,
      cpuPerGB: cpu / ((tcp.gbps * seconds) / 8),
      p50: rtt.p50Ms,
      p99: rtt.p99Ms,
      udpLoss: udp.lossPercent ?? 0,
    };
  } finally {
    await stopProcess(server);
    for (const n of [a, b]) n.child.kill('SIGTERM');
    await Promise.all([a, b].map((n) => (n.child.exitCode === null ? new Promise((r) => n.child.once('exit', r)) : 0)));
  }
}

async function main(): Promise<void> {
  console.log(`[bench] crypto (Node ${process.version}, OpenSSL ${process.versions.openssl}), 1400-byte payloads:`);
  for (const c of ['aes-256-gcm', 'chacha20-poly1305'] as const) {
    cryptoBench(c, 1400, 5000);
    const r = cryptoBench(c, 1400, 50_000);
    console.log(
      `[bench]   ${c}: seal ${r.sealNsPerByte.toFixed(3)} ns/byte, open ${r.openNsPerByte.toFixed(3)} ns/byte`,
    );
  }
  await createNetns(nsA);
  await createNetns(nsB);
  if (values.pods) {
    await createNetns(podA);
    await createNetns(podB);
  }
  try {
    if (values.pods) {
      await addPod(nsA, podA, POD_A_IP, 'a');
      await addPod(nsB, podB, POD_B_IP, 'b');
    }
    await run('ip', [
      'link',
      'add',
      `${prefix}va`,
      'netns',
      nsA,
      'type',
      'veth',
      'peer',
      'name',
      `${prefix}vb`,
      'netns',
      nsB,
    ]);
    await ipBatch([`addr add ${LINK_A}/24 dev ${prefix}va`, `link set ${prefix}va up`], { netns: nsA });
    await ipBatch([`addr add ${LINK_B}/24 dev ${prefix}vb`, `link set ${prefix}vb up`], { netns: nsB });
    const samples: Record<Path, Sample[]> = Object.fromEntries(PATHS.map((p) => [p, []]));
    // interleaved rounds: a load change on the shared machine hits both paths alike
    for (let r = 0; r < rounds; r++) for (const path of PATHS) samples[path]!.push(await measure(path, r));
    console.log(
      `\n[bench] ${rounds} round(s) of ${seconds} s, medians (forwarder scripts, not the agent: node --scavenger-max-new-space-capacity-mb=${scavengerMb}, the agent's malloc settings):`,
    );
    console.log('| path | TCP 1 stream Gbit/s | forwarder CPU s/GB | RTT p50 ms | RTT p99 ms | UDP loss % |');
    console.log('|---|---|---|---|---|---|');
    for (const path of PATHS) {
      const s = samples[path]!;
      const m = (f: (x: Sample) => number) => median(s.map(f));
      console.log(
        `| ${path} | ${m((x) => x.gbps).toFixed(2)} | ${m((x) => x.cpuPerGB).toFixed(1)} | ${m((x) => x.p50).toFixed(3)} | ${m((x) => x.p99).toFixed(3)} | ${m((x) => x.udpLoss).toFixed(1)} |`,
      );
    }
  } finally {
    await deleteNetns(nsA);
    await deleteNetns(nsB);
    if (values.pods) {
      await deleteNetns(podA);
      await deleteNetns(podB);
    }
  }
}

/** A pod namespace behind a node's namespace: a veth, the pod's /32 routed by the node. */
async function addPod(node: string, pod: string, ip: string, tag: string): Promise<void> {
  const hostSide = `${prefix}h${tag}`;
  await run('ip', ['link', 'add', hostSide, 'netns', node, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
  await ipBatch([`link set ${hostSide} up`, `route add ${ip}/32 dev ${hostSide}`], { netns: node });
  // The pod's default route has no gateway: the node answers its ARP for any address.
  await run('ip', [
    'netns',
    'exec',
    node,
    'sysctl',
    '-qw',
    'net.ipv4.ip_forward=1',
    `net.ipv4.conf.${hostSide}.proxy_arp=1`,
  ]);
  await ipBatch([`addr add ${ip}/32 dev eth0`, 'link set eth0 up', 'route add default dev eth0'], { netns: pod });
}

await main();
