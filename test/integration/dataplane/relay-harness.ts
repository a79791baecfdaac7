// Test harness for the UDP relay integration test: a relay namespace R joined to two member
// namespaces A and B by one veth each (A and B share no link: what crosses goes through R),
// a relay-node.ts process in R, a udp-node.ts process (real TUN + Forwarder +
// UdpDataSocket) in A and in B with one session keyed by the test whose endpoint is the
// relay; the binding made through the relay's API and registered by each member's allocate
// datagram from its own data socket. R also routes between A and B, so the same session can
// be pointed at the peer directly for comparison.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { run } from '../../../common/exec.ts';
import { ipBatch } from '../../../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';
import type { RelayBindingInfo, RelayStats } from '../../../dataplane/udp-relay.ts';
import { POD_A, POD_B, sessionKeys, sleep, UdpNode } from './udp-harness.ts';

const relayScript = fileURLToPath(new URL('./relay-node.ts', import.meta.url));
export const blasterScript = fileURLToPath(new URL('./relay-blaster.ts', import.meta.url));

// Addresses exist only inside the three namespaces.
export const R_A = '192.168.91.1';
export const A_R = '192.168.91.2';
export const R_B = '192.168.92.1';
export const B_R = '192.168.92.2';
export const RELAY_PORT = 7300;
export const MEMBER_PORT = 7100;

type Pods = { readonly 4: string; readonly 6: string };

export interface WireGrant {
  bindingId: number;
  member: 0 | 1;
  token: string;
  port: number;
  peer: string;
}

export interface RelayNodeStats {
  relay: RelayStats;
  rssKb: number;
  cpuSeconds: number;
}

export class RelayTrio {
  readonly prefix = runPrefix('emrl');
  readonly nsR = `${this.prefix}r`;
  readonly nsA = `${this.prefix}a`;
  readonly nsB = `${this.prefix}b`;
  relay!: UdpNode;
  nodeA!: UdpNode;
  nodeB!: UdpNode;
  keys = sessionKeys(100, 200);
  grants!: [WireGrant, WireGrant];
  private readonly servers: ChildProcess[] = [];
  readonly extra: ChildProcess[] = [];

  /** Builds the three namespaces, the relay, both members and one relayed session. Call close() even if this throws. */
  async start(): Promise<void> {
    for (const ns of [this.nsR, this.nsA, this.nsB]) await createNetns(ns);
    for (const [side, ns, rAddr, mAddr] of [
      ['a', this.nsA, R_A, A_R],
      ['b', this.nsB, R_B, B_R],
    ] as const) {
      const vr = `${this.prefix}r${side}`;
      const vm = `${this.prefix}${side}r`;
      await run('ip', ['link', 'add', vr, 'netns', this.nsR, 'type', 'veth', 'peer', 'name', vm, 'netns', ns]);
      await ipBatch([`addr add ${rAddr}/24 dev ${vr}`, `link set ${vr} up`], { netns: this.nsR });
      await ipBatch([`addr add ${mAddr}/24 dev ${vm}`, `link set ${vm} up`, `route add default via ${rAddr}`], {
        netns: ns,
      });
    }
    await run('ip', ['netns', 'exec', this.nsR, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await this.startRelay();
    const common = (me: Pods, peer: string, peerPods: Pods) => [
      ...['--tun', `${this.prefix}t`, '--address', `${me[4]}/32`],
      ...['--local', `${me[4].replace(/\.1$/, '.0')}/24`, '--local', `${me[6].replace(/::1$/, '::')}/64`],
      ...['--address', `${me[6]}/128`],
      ...['--peer', peer, '--peer-cidr', `${peerPods[4].replace(/\.1$/, '.0')}/24`],
      ...['--peer-cidr', `${peerPods[6].replace(/::1$/, '::')}/64`],
      ...['--bind', '::', '--port', String(MEMBER_PORT), '--mtu', '1400'],
    ];
    this.nodeA = new UdpNode(this.nsA, common(POD_A, 'nodeB', POD_B));
    this.nodeB = new UdpNode(this.nsB, common(POD_B, 'nodeA', POD_A));
    await Promise.all([this.nodeA.ready, this.nodeB.ready]);
    await this.nodeA.addSession(this.keys.a, { ip: R_A, port: RELAY_PORT });
    await this.nodeB.addSession(this.keys.b, { ip: R_B, port: RELAY_PORT });
    await this.nodeA.command('use-session', { localIndex: this.keys.a.localIndex });
    await this.nodeB.command('use-session', { localIndex: this.keys.b.localIndex });
    await this.bind();
    this.servers.push(
      spawn('ip', ['netns', 'exec', this.nsB, 'iperf3', '-s', '-B', POD_B[4], '-p', '5201'], { stdio: 'ignore' }),
    );
    for (let i = 0; ; i++) {
      const out = await run('ip', ['netns', 'exec', this.nsB, 'ss', '-ltnH', 'sport', '=', ':5201']);
      if (out.trim()) break;
      if (i === 50) throw new Error('iperf3 server did not start');
      await sleep(100);
    }
  }

  /** (Re)starts the relay process on RELAY_PORT. */
  async startRelay(): Promise<void> {
    this.relay = new UdpNode(this.nsR, ['--bind', '0.0.0.0', '--port', String(RELAY_PORT)], relayScript);
    await this.relay.ready;
  }

  /** Stops the relay process (SIGTERM) and waits for it to exit. */
  async stopRelay(): Promise<void> {
    const child = this.relay.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }

  /** A new binding for A and B on the relay, registered by both members; waits until both endpoints are known. */
  async bind(): Promise<void> {
    this.grants = await this.relay.command<[WireGrant, WireGrant]>('add-binding', { a: 'nodeA', b: 'nodeB' });
    await this.allocate();
  }

  /** Both members send their allocate datagram (again); resolves when the relay knows both endpoints. */
  async allocate(): Promise<void> {
    const [ga, gb] = this.grants;
    await this.nodeA.command('relay-allocate', {
      relay: { ip: R_A, port: RELAY_PORT },
      ...ga,
      indexes: [this.keys.a.remoteIndex],
    });
    await this.nodeB.command('relay-allocate', {
      relay: { ip: R_B, port: RELAY_PORT },
      ...gb,
      indexes: [this.keys.b.remoteIndex],
    });
    for (let i = 0; ; i++) {
      const info = await this.binding(ga.bindingId);
      if (info?.members.every((m) => m.endpoint !== null)) return;
      if (i === 100) throw new Error(`binding never completed: ${JSON.stringify(info)}`);
      await sleep(50);
    }
  }

  binding(id: number): Promise<RelayBindingInfo | null> {
    return this.relay.command('binding', { id });
  }

  relayStats(): Promise<RelayNodeStats> {
    return this.relay.command('stats');
  }

  /** Points both sessions at the relay, or straight at each other (routed by R's kernel). */
  async via(path: 'relay' | 'direct'): Promise<void> {
    const a = path === 'relay' ? { ip: R_A, port: RELAY_PORT } : { ip: B_R, port: MEMBER_PORT };
    const b = path === 'relay' ? { ip: R_B, port: RELAY_PORT } : { ip: A_R, port: MEMBER_PORT };
    await this.nodeA.command('set-endpoint', { localIndex: this.keys.a.localIndex, endpoint: a });
    await this.nodeB.command('set-endpoint', { localIndex: this.keys.b.localIndex, endpoint: b });
  }

  /** iperf3 TCP A → B between the pod addresses. */
  async iperf(seconds: number): Promise<{ bitsPerSecond: number; bytes: number }> {
    const out = await run(
      'ip',
      ['netns', 'exec', this.nsA, 'iperf3', '-c', POD_B[4], '-B', POD_A[4], '-p', '5201', '-t', String(seconds), '-J'],
      { timeoutMs: (seconds + 40) * 1000 },
    );
    const r = JSON.parse(out) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
    return { bitsPerSecond: r.end.sum_received.bits_per_second, bytes: r.end.sum_received.bytes };
  }

  /** One ping pod A → pod B with a 1 s wait; true when it was answered. */
  async pingOnce(): Promise<boolean> {
    return run('ip', ['netns', 'exec', this.nsA, 'ping', '-n', '-c', '1', '-W', '1', '-I', POD_A[4], POD_B[4]]).then(
      () => true,
      () => false,
    );
  }

  /** Kills every process and deletes the namespaces. Never throws. */
  async close(): Promise<void> {
    for (const c of [this.relay?.child, this.nodeA?.child, this.nodeB?.child, ...this.servers, ...this.extra])
      c?.kill('SIGKILL');
    for (const ns of [this.nsA, this.nsB, this.nsR]) await deleteNetns(ns);
  }
}
