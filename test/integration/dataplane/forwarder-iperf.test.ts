// Two namespaces, each with a real TUN driven by its own forwarder process
// (test/support/forwarder-node.ts), joined by a plain TCP socket over a veth pair that
// carries the frame codec. iperf3 runs between addresses routed through the TUNs.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipBatch, run } from '../../../common/exec.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';

const prefix = runPrefix('emfw');
const nsA = `${prefix}a`;
const nsB = `${prefix}b`;
const nodeScript = fileURLToPath(new URL('../../support/forwarder-node.ts', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'em-fwd-'));
const children: ChildProcess[] = [];

// Addresses exist only inside the two namespaces.
const LINK_A = '192.168.77.1';
const LINK_B = '192.168.77.2';
const POD_A = '10.201.0.1';
const POD_B = '10.202.0.1';

interface NodeStats {
  forwarder: {
    peers: Record<string, { txPackets: number; txBytes: number; rxPackets: number; rxBytes: number; drops: number }>;
    drops: Record<string, number>;
  };
  tun: { rxPackets: number; rxSuperPackets: number; txPackets: number; txSuperPackets: number; errors: number };
  linkUps: number;
}

/** A forwarder-node process and its line protocol. */
class ForwarderNode {
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
    children.push(this.child);
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

function startIperfServer(): ChildProcess {
  const server = spawn('ip', ['netns', 'exec', nsB, 'iperf3', '-s', '-B', POD_B, '-p', '5201'], { stdio: 'ignore' });
  children.push(server);
  return server;
}

async function iperf(seconds: number, during?: () => Promise<void>): Promise<{ bitsPerSecond: number; bytes: number }> {
  const client = run(
    'ip',
    ['netns', 'exec', nsA, 'iperf3', '-c', POD_B, '-B', POD_A, '-p', '5201', '-t', String(seconds), '-J'],
    { timeoutMs: (seconds + 30) * 1000 },
  );
  await during?.();
  const report = JSON.parse(await client) as {
    end: { sum_received: { bits_per_second: number; bytes: number } };
  };
  return { bitsPerSecond: report.end.sum_received.bits_per_second, bytes: report.end.sum_received.bytes };
}

async function waitForIperfServer(): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const out = await run('ip', ['netns', 'exec', nsB, 'ss', '-ltnH', 'sport', '=', ':5201']);
    if (out.trim()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('iperf3 server did not start');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until both sides' counters stop moving (frames in flight have landed). */
async function settledStats(a: ForwarderNode, b: ForwarderNode): Promise<[NodeStats, NodeStats]> {
  let last = '';
  for (let i = 0; i < 50; i++) {
    const pair: [NodeStats, NodeStats] = [await a.stats(), await b.stats()];
    const key = JSON.stringify(pair);
    if (key === last) return pair;
    last = key;
    await sleep(200);
  }
  throw new Error('counters never settled');
}

let nodeA: ForwarderNode;
let nodeB: ForwarderNode;

beforeAll(async () => {
  await createNetns(nsA);
  await createNetns(nsB);
  const vethA = `${prefix}va`;
  const vethB = `${prefix}vb`;
  await run('ip', ['link', 'add', vethA, 'netns', nsA, 'type', 'veth', 'peer', 'name', vethB, 'netns', nsB]);
  await ipBatch([`addr add ${LINK_A}/24 dev ${vethA}`, `link set ${vethA} up`], { netns: nsA });
  await ipBatch([`addr add ${LINK_B}/24 dev ${vethB}`, `link set ${vethB} up`], { netns: nsB });
  nodeB = new ForwarderNode(nsB, [
    ...['--tun', `${prefix}t`, '--address', `${POD_B}/32`, '--local', '10.202.0.0/24'],
    ...['--peer', 'nodeA', '--peer-cidr', '10.201.0.0/24', '--listen', `${LINK_B}:7000`],
  ]);
  nodeA = new ForwarderNode(nsA, [
    ...['--tun', `${prefix}t`, '--address', `${POD_A}/32`, '--local', '10.201.0.0/24'],
    ...['--peer', 'nodeB', '--peer-cidr', '10.202.0.0/24', '--connect', `${LINK_B}:7000`],
  ]);
  await Promise.all([nodeA.waitFor('ready'), nodeB.waitFor('ready')]);
  await Promise.all([nodeA.waitFor('link-up'), nodeB.waitFor('link-up')]);
  startIperfServer();
  await waitForIperfServer();
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await deleteNetns(nsA);
  await deleteNetns(nsB);
  rmSync(tmp, { recursive: true, force: true });
});

describe('forwarder between two TUNs over a socket link', () => {
  it('carries iperf3 TCP as GSO super-packets, with matching byte counters on both sides', async () => {
    const pcap = join(tmp, 'flow.pcap');
    await nodeA.command('capture-start');
    const result = await iperf(3);
    await nodeA.command('capture-stop', pcap);
    const [a, b] = await settledStats(nodeA, nodeB);
    console.log(`iperf3 through the forwarders (offloads on): ${(result.bitsPerSecond / 1e9).toFixed(2)} Gbit/s`);
    expect(result.bytes).toBeGreaterThan(2_000_000);
    // super-packets larger than the MTU were read from A's TUN and written into B's
    expect(a.tun.rxSuperPackets).toBeGreaterThan(20);
    expect(b.tun.txSuperPackets).toBeGreaterThan(20);
    // what one side sent is exactly what the other received, both directions
    const aToB = a.forwarder.peers['nodeB']!;
    const bFromA = b.forwarder.peers['nodeA']!;
    expect(bFromA.rxBytes).toBe(aToB.txBytes);
    expect(bFromA.rxPackets).toBe(aToB.txPackets);
    expect(aToB.rxBytes).toBe(bFromA.txBytes);
    expect(aToB.rxPackets).toBe(bFromA.txPackets);
    expect(aToB.txBytes).toBeGreaterThan(result.bytes);
    // Nothing of the flow was dropped. The only drops allowed are 'no-route' ones: the
    // kernel's own IPv6 router solicitations / MLD reports on a fresh TUN have no peer.
    expect(Object.keys(a.forwarder.drops).filter((r) => r !== 'no-route')).toEqual([]);
    expect(Object.keys(b.forwarder.drops).filter((r) => r !== 'no-route')).toEqual([]);
    expect(a.tun.errors + b.tun.errors).toBe(0);
    // the capture is a pcap tcpdump reads, and it holds the iperf3 flow both ways
    expect(statSync(pcap).size).toBeGreaterThan(24);
    const dump = await run('tcpdump', ['-nn', '-r', pcap]);
    expect(dump).toMatch(
      new RegExp(`IP ${POD_A.replaceAll('.', '\\.')}\\.\\d+ > ${POD_B.replaceAll('.', '\\.')}\\.5201: Flags`),
    );
    expect(dump).toMatch(
      new RegExp(`IP ${POD_B.replaceAll('.', '\\.')}\\.5201 > ${POD_A.replaceAll('.', '\\.')}\\.\\d+: Flags`),
    );
  });

  it('drops and counts malformed frames, malformed, spoofed and transit packets while iperf3 keeps running', async () => {
    const before = await nodeB.stats();
    const result = await iperf(4, async () => {
      await sleep(1000);
      expect(await nodeA.command('inject-bad-packets')).toBe(true);
      await sleep(1000);
      expect(await nodeA.command('inject-garbage')).toBe(true);
      await nodeA.waitFor('link-up', 1); // B reset the stream; A dialled again
    });
    expect(result.bytes).toBeGreaterThan(1_000_000);
    const [a, b] = await settledStats(nodeA, nodeB);
    const drops = b.forwarder.drops;
    console.log('drops counted by the receiving forwarder:', JSON.stringify(drops));
    expect(drops['spoofed-source']).toBe(1);
    expect(drops['not-local-destination']).toBe(1);
    expect(drops['malformed-bad-version']).toBe(1);
    expect(drops['malformed-truncated']).toBe(1);
    expect(drops['bad-frame']).toBe(1);
    // The 5 injected faults, plus B's own frames lost while the reset stream was gone:
    // refused by the closing socket ('link-full') or beyond the hold queue ('no-link').
    const delta = (reason: string) => (drops[reason] ?? 0) - (before.forwarder.drops[reason] ?? 0);
    const peerDrops = b.forwarder.peers['nodeA']!.drops - before.forwarder.peers['nodeA']!.drops;
    expect(peerDrops).toBe(5 + delta('link-full') + delta('no-link'));
    expect({ a: a.linkUps, b: b.linkUps }).toEqual({ a: 2, b: 2 }); // exactly one reset, one re-dial
    expect(nodeB.stderr).toMatch(/bad frame magic 0xff.*stream reset/);
  });
});
