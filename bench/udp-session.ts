// The UDP session data path against the stream path, between two forwarders.
// Two namespaces joined by a veth; each runs one dataplane node process (a real TUN +
// Forwarder): either with a UDP session (test/integration/dataplane/udp-node.ts) or with the
// frame codec over a TCP socket, the stream path (test/support/forwarder-node.ts); the UDP
// path twice, its datagrams read by a reader thread or on the event loop (uv_poll). The
// scripts are spawned, not imported. Measures per path: iperf3 TCP single stream, forwarder
// CPU seconds per GB (both processes), ping RTT p50/p99, iperf3 UDP loss at a fixed offered
// rate; and the AEADs' seal/open ns per byte with the Node binary's OpenSSL.
// Run (root): node bench/udp-session.ts [--seconds 5] [--rounds 1] [--udp-rate 500M] [--scavenger-mb 8]
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '../common/exec.ts';
import { ipBatch } from '../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../common/netns.ts';
import { cryptoBench } from '../dataplane/udp-session.ts';
import { iperfClient, pingRtt, startIperfServer, stopProcess } from './lib/iperf.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '1' },
    'udp-rate': { type: 'string', default: '500M' },
    'scavenger-mb': { type: 'string', default: '8' },
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
const LINK_A = '192.168.79.1';
const LINK_B = '192.168.79.2';
const POD_A = '10.221.0.1';
const POD_B = '10.222.0.1';
const UDP_PORT = 7200;

/** stream: frames over TCP; udp: sessions, reader thread; udp-loop: sessions read on the event loop. */
type Path = 'stream' | 'udp' | 'udp-loop';
const PATHS: readonly Path[] = ['stream', 'udp', 'udp-loop'];

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
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...flags, script, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
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

async function startNodes(path: Path, round: number): Promise<[NodeProcess, NodeProcess]> {
  const tun = `${prefix}${path === 'udp-loop' ? 'l' : path[0]}${round}`;
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
  const args = ['--bind', '0.0.0.0', '--port', String(UDP_PORT), '--receiver', path === 'udp-loop' ? 'loop' : 'thread'];
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

async function measure(path: Path, round: number): Promise<Sample> {
  const [a, b] = await startNodes(path, round);
  const server = await startIperfServer(nsB);
  try {
    const cpu0 = (await a.cpuSeconds()) + (await b.cpuSeconds());
    const tcp = await iperfClient({ netns: nsA, server: POD_B, seconds });
    const cpu = (await a.cpuSeconds()) + (await b.cpuSeconds()) - cpu0;
    console.log(`[bench] ${path} round ${round + 1}: TCP ${tcp.gbps.toFixed(2)} Gbit/s`);
    const rtt = await pingRtt(nsA, POD_B, 300);
    console.log(`[bench] ${path} round ${round + 1}: RTT p50 ${rtt.p50Ms} ms, p99 ${rtt.p99Ms} ms`);
    const before = await Promise.all([a.command<NodeStats>('stats'), b.command<NodeStats>('stats')]);
    const rcvbuf0 = await udpReceiveBufferErrors(nsB);
    const udp = await iperfClient({ netns: nsA, server: POD_B, seconds, udpRate: String(values['udp-rate']) });
    const rcvbuf = (await udpReceiveBufferErrors(nsB)) - rcvbuf0;
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
  try {
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
    const samples: Record<Path, Sample[]> = { stream: [], udp: [], 'udp-loop': [] };
    // interleaved rounds: a load change on the shared machine hits both paths alike
    for (let r = 0; r < rounds; r++) for (const path of PATHS) samples[path].push(await measure(path, r));
    console.log(
      `\n[bench] ${rounds} round(s) of ${seconds} s, medians (node --scavenger-max-new-space-capacity-mb=${scavengerMb}):`,
    );
    console.log('| path | TCP 1 stream Gbit/s | forwarder CPU s/GB | RTT p50 ms | RTT p99 ms | UDP loss % |');
    console.log('|---|---|---|---|---|---|');
    for (const path of PATHS) {
      const s = samples[path];
      const m = (f: (x: Sample) => number) => median(s.map(f));
      console.log(
        `| ${path} | ${m((x) => x.gbps).toFixed(2)} | ${m((x) => x.cpuPerGB).toFixed(1)} | ${m((x) => x.p50).toFixed(3)} | ${m((x) => x.p99).toFixed(3)} | ${m((x) => x.udpLoss).toFixed(1)} |`,
      );
    }
  } finally {
    await deleteNetns(nsA);
    await deleteNetns(nsB);
  }
}

await main();
