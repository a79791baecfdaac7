// The UDP relay against the direct UDP path, in the same run. Three namespaces: A and B, each
// joined to R by a veth; R routes between them (the "direct" path: the kernel forwards) and
// runs the relay process (test/integration/dataplane/relay-node.ts); A and B run one dataplane
// node each (udp-node.ts: a real TUN + Forwarder + UdpDataSocket) with one session whose
// endpoint is switched between the peer (direct) and the relay (relayed). Scripts are
// spawned, not imported. Measures per path, rounds interleaved: iperf3 TCP single stream and
// ping RTT pod → pod; for the relay: its process CPU seconds per GB forwarded, and its RSS
// with 1 binding and with 50 bindings carrying traffic (49 of them from
// relay-blaster.ts: one socket per member, datagrams shaped like sealed data).
// Run (root): node bench/udp-relay.ts [--seconds 5] [--rounds 2]
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '../common/exec.ts';
import { ipBatch } from '../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../common/netns.ts';
import { iperfClient, pingRtt, startIperfServer, stopProcess } from './lib/iperf.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);

const script = (name: string) => fileURLToPath(new URL(`../test/integration/dataplane/${name}`, import.meta.url));
const prefix = runPrefix('embr');
const nsR = `${prefix}r`;
const nsA = `${prefix}a`;
const nsB = `${prefix}b`;
const R_A = '192.168.95.1';
const A_R = '192.168.95.2';
const R_B = '192.168.96.1';
const B_R = '192.168.96.2';
const POD_A = '10.231.0.1';
const POD_B = '10.232.0.1';
const MEMBER_PORT = 7100;
const RELAY_PORT = 7300;

/** A spawned node process and its stdin/stdout line protocol ("<id> <cmd> [json]" → JSON lines). */
class NodeProcess {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  private nextId = 1;
  private readonly waiting = new Map<string, (m: { result?: unknown; error?: string }) => void>();
  stderr = '';

  constructor(ns: string, file: string, args: string[]) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, file, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-2000);
    });
    const ready = Promise.withResolvers<void>();
    this.ready = ready.promise;
    this.child.once('exit', () => ready.reject(new Error(`node exited: ${this.stderr}`)));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as { id?: string; event?: string; result?: unknown; error?: string };
      if (m.event === 'ready' || m.event === 'registered') ready.resolve();
      else if (m.id) {
        this.waiting.get(m.id)?.(m);
        this.waiting.delete(m.id);
      }
    });
  }

  command<T>(cmd: string, arg?: unknown): Promise<T> {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (m) => (m.error ? reject(new Error(m.error)) : resolve(m.result as T)));
      this.child.stdin!.write(`${id} ${cmd}${arg === undefined ? '' : ` ${JSON.stringify(arg)}`}\n`);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

interface Grant {
  bindingId: number;
  member: 0 | 1;
  token: string;
}
interface RelayUsage {
  relay: { txBytes: number; bindings: number; drops: Record<string, number> };
  rssKb: number;
  cpuSeconds: number;
}

async function topology(): Promise<void> {
  for (const ns of [nsR, nsA, nsB]) await createNetns(ns);
  for (const [side, ns, rAddr, mAddr] of [
    ['a', nsA, R_A, A_R],
    ['b', nsB, R_B, B_R],
  ] as const) {
    const vr = `${prefix}r${side}`;
    const vm = `${prefix}${side}r`;
    await run('ip', ['link', 'add', vr, 'netns', nsR, 'type', 'veth', 'peer', 'name', vm, 'netns', ns]);
    await ipBatch([`addr add ${rAddr}/24 dev ${vr}`, `link set ${vr} up`], { netns: nsR });
    await ipBatch([`addr add ${mAddr}/24 dev ${vm}`, `link set ${vm} up`, `route add default via ${rAddr}`], {
      netns: ns,
    });
  }
  await run('ip', ['netns', 'exec', nsR, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'em-bench-relay-'));
  const procs: NodeProcess[] = [];
  let server: ChildProcess | undefined;
  try {
    await topology();
    const relay = new NodeProcess(nsR, script('relay-node.ts'), ['--bind', '0.0.0.0', '--port', String(RELAY_PORT)]);
    procs.push(relay);
    const node = (me: string, peer: string, peerPod: string) => [
      ...['--tun', `${prefix}t`, '--address', `${me}/32`, '--local', `${me.replace(/\.1$/, '.0')}/24`],
      ...['--peer', peer, '--peer-cidr', `${peerPod.replace(/\.1$/, '.0')}/24`, '--mtu', '1400'],
      ...['--bind', '0.0.0.0', '--port', String(MEMBER_PORT)],
    ];
    const a = new NodeProcess(nsA, script('udp-node.ts'), node(POD_A, 'nodeB', POD_B));
    const b = new NodeProcess(nsB, script('udp-node.ts'), node(POD_B, 'nodeA', POD_A));
    procs.push(a, b);
    await Promise.all([relay.ready, a.ready, b.ready]);
    const ab = randomBytes(32).toString('hex');
    const ba = randomBytes(32).toString('hex');
    await a.command('add-session', { localIndex: 1, remoteIndex: 2, txKey: ab, rxKey: ba });
    await b.command('add-session', { localIndex: 2, remoteIndex: 1, txKey: ba, rxKey: ab });
    await a.command('use-session', { localIndex: 1 });
    await b.command('use-session', { localIndex: 2 });
    const [ga, gb] = await relay.command<[Grant, Grant]>('add-binding', { a: 'nodeA', b: 'nodeB' });
    await a.command('relay-allocate', { relay: { ip: R_A, port: RELAY_PORT }, ...ga, indexes: [2] });
    await b.command('relay-allocate', { relay: { ip: R_B, port: RELAY_PORT }, ...gb, indexes: [1] });
    const via = async (path: 'direct' | 'relayed') => {
      const ea = path === 'relayed' ? { ip: R_A, port: RELAY_PORT } : { ip: B_R, port: MEMBER_PORT };
      const eb = path === 'relayed' ? { ip: R_B, port: RELAY_PORT } : { ip: A_R, port: MEMBER_PORT };
      await a.command('set-endpoint', { localIndex: 1, endpoint: ea });
      await b.command('set-endpoint', { localIndex: 2, endpoint: eb });
    };
    server = await startIperfServer(nsB);

    const samples = { direct: [] as number[], relayed: [] as number[] };
    const rtt = { direct: [] as number[][], relayed: [] as number[][] };
    const cpuPerGB: number[] = [];
    for (let r = 0; r < rounds; r++) {
      for (const path of ['direct', 'relayed'] as const) {
        await via(path);
        const u0 = await relay.command<RelayUsage>('stats');
        const tcp = await iperfClient({ netns: nsA, server: POD_B, seconds });
        const u1 = await relay.command<RelayUsage>('stats');
        const ping = await pingRtt(nsA, POD_B, 200);
        samples[path].push(tcp.gbps);
        rtt[path].push([ping.p50Ms, ping.p99Ms]);
        let extra = '';
        if (path === 'relayed') {
          const gb = (u1.relay.txBytes - u0.relay.txBytes) / 1e9;
          cpuPerGB.push((u1.cpuSeconds - u0.cpuSeconds) / gb);
          extra = `, relay forwarded ${gb.toFixed(2)} GB at ${cpuPerGB.at(-1)!.toFixed(2)} CPU s/GB`;
        }
        console.log(
          `[bench] ${path} round ${r + 1}: TCP ${tcp.gbps.toFixed(2)} Gbit/s, RTT p50 ${ping.p50Ms} ms p99 ${ping.p99Ms} ms${extra}`,
        );
      }
    }

    // RSS with 1 binding under load, then with 50 bindings carrying traffic.
    await via('relayed');
    await iperfClient({ netns: nsA, server: POD_B, seconds: 2 });
    const one = await relay.command<RelayUsage>('stats');
    const grants: [Grant, Grant][] = [];
    for (let i = 0; i < 49; i++) grants.push(await relay.command('add-binding', { a: `bA${i}`, b: `bB${i}` }));
    const file = (side: 0 | 1) => {
      const f = join(tmp, `grants${side}.json`);
      writeFileSync(f, JSON.stringify(grants.map((g, i) => ({ ...g[side], index: 6000 + i }))));
      return f;
    };
    const listen = new NodeProcess(nsB, script('relay-blaster.ts'), [
      ...['--relay', `${R_B}:${RELAY_PORT}`, '--grants', file(1), '--listen'],
    ]);
    procs.push(listen);
    await listen.ready;
    const blast = new NodeProcess(nsA, script('relay-blaster.ts'), [
      ...['--relay', `${R_A}:${RELAY_PORT}`, '--grants', file(0), '--seconds', String(seconds)],
    ]);
    procs.push(blast);
    await blast.ready;
    const loaded = await iperfClient({ netns: nsA, server: POD_B, seconds });
    await new Promise((r) => blast.child.once('exit', r));
    const fifty = await relay.command<RelayUsage>('stats');

    const m = (xs: number[]) => median(xs);
    const direct = m(samples.direct);
    const relayed = m(samples.relayed);
    console.log(`\n[bench] ${rounds} round(s) of ${seconds} s, medians (a loaded shared machine: noisy):`);
    console.log('| path | TCP 1 stream Gbit/s | RTT p50 ms | RTT p99 ms |');
    console.log('|---|---|---|---|');
    for (const path of ['direct', 'relayed'] as const)
      console.log(
        `| UDP ${path} | ${m(samples[path]).toFixed(2)} | ${m(rtt[path].map((x) => x[0]!)).toFixed(3)} | ${m(rtt[path].map((x) => x[1]!)).toFixed(3)} |`,
      );
    console.log(`\n[bench] relayed / direct: ${((relayed / direct) * 100).toFixed(0)} %`);
    console.log(`[bench] relay CPU: ${m(cpuPerGB).toFixed(2)} s/GB forwarded (the relay process: thread + JS idle)`);
    console.log(
      `[bench] relay RSS: 1 binding ${(one.rssKb / 1024).toFixed(1)} MB, 50 bindings with traffic ${(fifty.rssKb / 1024).toFixed(1)} MB ` +
        `(iperf3 on 1 binding meanwhile ${loaded.gbps.toFixed(2)} Gbit/s; relay drops ${JSON.stringify(fifty.relay.drops)})`,
    );
  } finally {
    if (server) await stopProcess(server);
    await Promise.all(procs.map((p) => p.stop().catch(() => {})));
    for (const ns of [nsA, nsB, nsR]) await deleteNetns(ns);
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
