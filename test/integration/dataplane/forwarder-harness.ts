// Test harness for the forwarder integration tests: two namespaces joined by a veth pair,
// each running test/support/forwarder-node.ts (a real TUN + Forwarder) as its own process,
// the two linked by a plain TCP socket carrying the frame codec; iperf3 between them.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { run } from '../../../common/exec.ts';
import { ipBatch } from '../../../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';

const nodeScript = fileURLToPath(new URL('../../support/forwarder-node.ts', import.meta.url));

// Addresses exist only inside the two namespaces.
const LINK_B = '192.168.77.2';
export const POD_A = '10.201.0.1';
export const POD_B = '10.202.0.1';
export const POD6_A = 'fd00:201::1';
export const POD6_B = 'fd00:202::1';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface NodeStats {
  forwarder: {
    peers: Record<string, { txPackets: number; txBytes: number; rxPackets: number; rxBytes: number; drops: number }>;
    drops: Record<string, number>;
  };
  tun: { rxPackets: number; rxSuperPackets: number; txPackets: number; txSuperPackets: number; errors: number };
  linkUps: number;
  cpuSeconds: number;
}

/** A forwarder-node process and its line protocol. */
export class ForwarderNode {
  readonly child: ChildProcess;
  private nextId = 1;
  private readonly waiting = new Map<string, (reply: { result?: unknown; error?: string }) => void>();
  private readonly events: { event: string }[] = [];
  private readonly eventWaiters: { name: string; seen: number; resolve: () => void }[] = [];
  stderr = '';

  constructor(ns: string, args: string[]) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, nodeScript, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as { id?: string; event?: string; result?: unknown; error?: string };
      if (msg.event) {
        this.events.push({ event: msg.event });
        for (const w of [...this.eventWaiters]) {
          if (this.count(w.name) > w.seen) {
            this.eventWaiters.splice(this.eventWaiters.indexOf(w), 1);
            w.resolve();
          }
        }
      } else if (msg.id) {
        this.waiting.get(msg.id)?.(msg);
        this.waiting.delete(msg.id);
      }
    });
  }

  count(event: string): number {
    return this.events.filter((e) => e.event === event).length;
  }

  /** Resolves when `event` has been seen more than `seen` times. */
  waitFor(event: string, seen = 0, timeoutMs = 20_000): Promise<void> {
    if (this.count(event) > seen) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${event}" event; stderr: ${this.stderr}`)), timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.eventWaiters.push({ name: event, seen, resolve: done });
    });
  }

  command<T>(cmd: string, arg = ''): Promise<T> {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (reply) => (reply.error ? reject(new Error(reply.error)) : resolve(reply.result as T)));
      this.child.stdin!.write(`${id} ${cmd} ${arg}\n`);
    });
  }

  stats(): Promise<NodeStats> {
    return this.command<NodeStats>('stats');
  }
}

export class ForwarderPair {
  readonly prefix = runPrefix('emfw');
  readonly nsA = `${this.prefix}a`;
  readonly nsB = `${this.prefix}b`;
  nodeA!: ForwarderNode;
  nodeB!: ForwarderNode;
  private readonly iperfServers: ChildProcess[] = [];

  /** Builds the two nodes; B's TUN offloads can be switched off. Call close() even if this throws. */
  async start(opts: { offloadB?: boolean } = {}): Promise<void> {
    await createNetns(this.nsA);
    await createNetns(this.nsB);
    const vethA = `${this.prefix}va`;
    const vethB = `${this.prefix}vb`;
    await run('ip', [
      'link',
      'add',
      vethA,
      'netns',
      this.nsA,
      'type',
      'veth',
      'peer',
      'name',
      vethB,
      'netns',
      this.nsB,
    ]);
    await ipBatch([`addr add 192.168.77.1/24 dev ${vethA}`, `link set ${vethA} up`], { netns: this.nsA });
    await ipBatch([`addr add ${LINK_B}/24 dev ${vethB}`, `link set ${vethB} up`], { netns: this.nsB });
    this.nodeB = new ForwarderNode(this.nsB, [
      ...['--tun', `${this.prefix}t`, '--address', `${POD_B}/32`, '--address', `${POD6_B}/128`],
      ...['--local', '10.202.0.0/24', '--local', 'fd00:202::/64'],
      ...['--peer', 'nodeA', '--peer-cidr', '10.201.0.0/24', '--peer-cidr', 'fd00:201::/64'],
      ...['--listen', `${LINK_B}:7000`],
      ...['--offload', opts.offloadB === false ? '0' : '1'],
    ]);
    this.nodeA = new ForwarderNode(this.nsA, [
      ...['--tun', `${this.prefix}t`, '--address', `${POD_A}/32`, '--address', `${POD6_A}/128`],
      ...['--local', '10.201.0.0/24', '--local', 'fd00:201::/64'],
      ...['--peer', 'nodeB', '--peer-cidr', '10.202.0.0/24', '--peer-cidr', 'fd00:202::/64'],
      ...['--connect', `${LINK_B}:7000`],
    ]);
    await Promise.all([this.nodeA.waitFor('ready'), this.nodeB.waitFor('ready')]);
    await Promise.all([this.nodeA.waitFor('link-up'), this.nodeB.waitFor('link-up')]);
    // one server per family: port 5201 on B's IPv4 pod address, 5202 on its IPv6 one
    for (const [address, port] of [
      [POD_B, '5201'],
      [POD6_B, '5202'],
    ] as const) {
      this.iperfServers.push(
        spawn('ip', ['netns', 'exec', this.nsB, 'iperf3', '-s', '-B', address, '-p', port], { stdio: 'ignore' }),
      );
      for (let i = 0; ; i++) {
        const out = await run('ip', ['netns', 'exec', this.nsB, 'ss', '-ltnH', 'sport', '=', `:${port}`]);
        if (out.trim()) break;
        if (i === 50) throw new Error(`iperf3 server on ${address} did not start`);
        await sleep(100);
      }
    }
  }

  /** Runs an iperf3 TCP client A → B for `seconds`, calling `during` once it has started. */
  async iperf(
    seconds: number,
    during?: () => Promise<void>,
    family: 4 | 6 = 4,
  ): Promise<{ bitsPerSecond: number; bytes: number }> {
    const [server, clientAddress, port] = family === 4 ? [POD_B, POD_A, '5201'] : [POD6_B, POD6_A, '5202'];
    const client = run(
      'ip',
      ['netns', 'exec', this.nsA, 'iperf3', '-c', server, '-B', clientAddress, '-p', port, '-t', String(seconds), '-J'],
      { timeoutMs: (seconds + 30) * 1000 },
    );
    await during?.();
    const report = JSON.parse(await client) as {
      end: { sum_received: { bits_per_second: number; bytes: number } };
    };
    return { bitsPerSecond: report.end.sum_received.bits_per_second, bytes: report.end.sum_received.bytes };
  }

  /** Both nodes' stats once the counters stop moving (frames in flight have landed). */
  async settledStats(): Promise<[NodeStats, NodeStats]> {
    let last = '';
    for (let i = 0; i < 50; i++) {
      const pair: [NodeStats, NodeStats] = [await this.nodeA.stats(), await this.nodeB.stats()];
      const key = JSON.stringify(pair.map((s) => ({ ...s, cpuSeconds: 0 }))); // CPU time always moves
      if (key === last) return pair;
      last = key;
      await sleep(200);
    }
    throw new Error('counters never settled');
  }

  /** Kills the processes and deletes both namespaces. Never throws. */
  async close(): Promise<void> {
    for (const c of [this.nodeA?.child, this.nodeB?.child, ...this.iperfServers]) c?.kill('SIGKILL');
    await deleteNetns(this.nsA);
    await deleteNetns(this.nsB);
  }
}
