// A two-node cluster in namespaces created by the test: node namespaces joined by one veth
// link, the Kubernetes API test server running inside the first node's namespace, one real
// agent process per node (`edgemesh-cni agent --config`), and pods created by calling the
// installed CNI client exactly as a runtime does. Everything carries a per-run prefix and
// cleanup() removes it, also after a failure.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { fetchStatus } from '../../../agent/control-api.ts';
import type { AgentStatus } from '../../../agent/status.ts';
import { run, tryRun } from '../../../common/exec.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(ROOT, 'bin', 'edgemesh-cni.js');
const API_SERVER = join(ROOT, 'lab', 'kube-apiserver', 'main.ts');
const CRD = join(ROOT, 'deploy', 'crds', 'ipamblock.yaml');
export const CLUSTER_CIDR = '10.99.0.0/16';
export const CLUSTER_CIDR_V6 = 'fd00:99::/56';

export interface TestNode {
  name: string;
  netns: string;
  ip: string;
  /** Set when the cluster is dual-stack: the node's IPv6 address on the link. */
  ipv6?: string;
  site: string;
  dir: string;
  configPath: string;
  runDir: string;
  stateDir: string;
  cniBinDir: string;
  cniConfDir: string;
  logPath: string;
  agent?: ChildProcess;
}

export interface TestPod {
  name: string;
  node: TestNode;
  netns: string;
  containerId: string;
  ip: string;
  /** Every address the pod got (IPv4, then IPv6 when dual-stack). */
  ips: string[];
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export class AgentCluster {
  readonly prefix = runPrefix('ag');
  readonly nodes: TestNode[] = [];
  readonly pods: TestPod[] = [];
  dir = '';
  kubeconfig = '';
  private api: ChildProcess | undefined;
  private readonly netnses: string[] = [];

  /**
   * Two nodes on one link. `sites` decides the path: one site → host-gw routes; two sites
   * with public (TEST-NET) addresses → direct libp2p tunnels through the TUN.
   */
  dualStack = false;
  /** Extra keys for every agent's `overlay` section (e.g. `{ transport: 'stream' }`). */
  overlayExtra: Record<string, unknown> = {};

  async up(opts: { sites: [string, string]; subnet: '192.168.77' | '203.0.113'; dualStack?: boolean }): Promise<void> {
    this.dualStack = opts.dualStack ?? false;
    this.dir = await mkdtemp(join(tmpdir(), `${this.prefix}`));
    for (const [i, site] of opts.sites.entries()) {
      const name = `${this.prefix}n${i + 1}`;
      const dir = join(this.dir, name);
      const node: TestNode = {
        name,
        netns: name,
        ip: `${opts.subnet}.${11 + i}`,
        ...(this.dualStack ? { ipv6: `fd00:77::${11 + i}` } : {}),
        site,
        dir,
        configPath: join(dir, 'agent.yaml'),
        runDir: join(dir, 'run'),
        stateDir: join(dir, 'state'),
        cniBinDir: join(dir, 'cni-bin'),
        cniConfDir: join(dir, 'cni-conf'),
        logPath: join(dir, 'agent.log'),
      };
      await createNetns(node.netns);
      this.netnses.push(node.netns);
      this.nodes.push(node);
    }
    const [a, b] = this.nodes as [TestNode, TestNode];
    await run('ip', [
      'link',
      'add',
      `${this.prefix}v1`,
      'netns',
      a.netns,
      'type',
      'veth',
      'peer',
      `${this.prefix}v2`,
      'netns',
      b.netns,
    ]);
    for (const [n, dev] of [
      [a, `${this.prefix}v1`],
      [b, `${this.prefix}v2`],
    ] as const) {
      await run('ip', ['-n', n.netns, 'addr', 'add', `${n.ip}/24`, 'dev', dev]);
      if (n.ipv6) await run('ip', ['-n', n.netns, 'addr', 'add', `${n.ipv6}/64`, 'dev', dev, 'nodad']);
      await run('ip', ['-n', n.netns, 'link', 'set', dev, 'up']);
    }
    await this.startApiServer(a);
    await this.kubectl(['apply', '-f', CRD]);
    for (const n of this.nodes) await this.registerNode(n);
  }

  private async startApiServer(host: TestNode): Promise<void> {
    this.kubeconfig = join(this.dir, 'kubeconfig');
    const log = createWriteStream(join(this.dir, 'apiserver.log'));
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        host.netns,
        process.execPath,
        API_SERVER,
        '--listen',
        `${host.ip}:6443`,
        '--kubeconfig-out',
        this.kubeconfig,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.api = child;
    child.stderr?.pipe(log);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const t = setTimeout(() => reject(new Error('API server not ready in 20 s')), 20_000);
      child.stdout?.on('data', (d: Buffer) => {
        out += d;
        if (out.includes('"ready":true')) {
          clearTimeout(t);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`API server exited (${code})`)));
    });
  }

  /** kubectl against the test server, run from the first node's namespace. */
  kubectl(args: string[], input?: string): Promise<string> {
    return run(
      'ip',
      ['netns', 'exec', this.nodes[0]!.netns, 'kubectl', '--kubeconfig', this.kubeconfig, ...args],
      input === undefined ? {} : { input },
    );
  }

  async registerNode(n: TestNode): Promise<void> {
    const manifest = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name } },
      status: {
        addresses: [
          { type: 'InternalIP', address: n.ip },
          ...(n.ipv6 ? [{ type: 'InternalIP', address: n.ipv6 }] : []),
        ],
      },
    };
    await this.kubectl(['create', '-f', '-'], JSON.stringify(manifest));
  }

  async getNode(name: string): Promise<{ metadata: { annotations?: Record<string, string> } }> {
    return JSON.parse(await this.kubectl(['get', 'node', name, '-o', 'json']));
  }

  async writeConfig(n: TestNode, extra: Record<string, unknown> = {}): Promise<void> {
    await mkdir(n.dir, { recursive: true });
    const public_ = !n.ip.startsWith('192.168.');
    const config = {
      nodeName: n.name,
      kubeconfig: this.kubeconfig,
      clusterCidrs: this.dualStack ? [CLUSTER_CIDR, CLUSTER_CIDR_V6] : [CLUSTER_CIDR],
      blockPrefixV4: 24,
      site: n.site,
      nodeIp: n.ip,
      relay: false,
      overlay: {
        listen: ['/ip4/0.0.0.0/tcp/4001'],
        announce: public_ ? [`/ip4/${n.ip}/tcp/4001`] : [],
        punchPort: 4002,
        ...this.overlayExtra,
      },
      paths: { stateDir: n.stateDir, runDir: n.runDir, cniBinDir: n.cniBinDir, cniConfDir: n.cniConfDir },
      tun: { name: 'edgemesh0', offload: true }, // mtu: auto
      bridge: { name: 'edgemesh-br0', mtu: 1500 },
      http: { listen: '127.0.0.1:9273' },
      resyncSeconds: 2,
      ...extra,
    };
    await writeFile(n.configPath, toYaml(config));
  }

  /** Starts the agent of a node (writing its config first if needed) and waits for ready. */
  async startAgent(n: TestNode, opts: { waitReady?: boolean } = {}): Promise<void> {
    await this.writeConfig(n);
    const log = createWriteStream(n.logPath, { flags: 'a' });
    const child = spawn('ip', ['netns', 'exec', n.netns, process.execPath, CLI, 'agent', '--config', n.configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    n.agent = child;
    if (opts.waitReady ?? true) {
      await waitFor(
        `agent ${n.name} ready`,
        async () => {
          if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}:\n${await this.logTail(n)}`);
          return (await this.status(n).catch(() => undefined))?.ready === true ? true : undefined;
        },
        60_000,
      );
    }
  }

  async logTail(n: TestNode, lines = 30): Promise<string> {
    const text = await readFile(n.logPath, 'utf8').catch(() => '');
    return text.trim().split('\n').slice(-lines).join('\n');
  }

  /** SIGKILL (crash) or SIGTERM (graceful) of a node's agent; resolves when it is gone. */
  async stopAgent(n: TestNode, signal: 'SIGKILL' | 'SIGTERM'): Promise<number | null> {
    const child = n.agent;
    if (!child) return null;
    // `ip netns exec` execs the command, so the child's pid is the agent's.
    child.kill(signal);
    if (!(await waitExit(child, 20_000))) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
    n.agent = undefined;
    return child.exitCode;
  }

  /** Runs the CLI inside a node's namespace (status, capture, uninstall). */
  cli(n: TestNode, args: string[]): Promise<string> {
    return run('ip', ['netns', 'exec', n.netns, process.execPath, CLI, ...args]);
  }

  /** The agent's `GET /status` (the unix socket is reachable from any namespace). */
  async status(n: TestNode): Promise<AgentStatus> {
    return await fetchStatus(join(n.runDir, 'agent.sock'));
  }

  /** The plugin config a runtime would hand to the first plugin of the node's conflist. */
  async pluginConfig(n: TestNode): Promise<string> {
    const conflist = JSON.parse(await readFile(join(n.cniConfDir, '10-edgemesh.conflist'), 'utf8'));
    return JSON.stringify({ cniVersion: conflist.cniVersion, name: conflist.name, ...conflist.plugins[0] });
  }

  async cni(
    n: TestNode,
    command: string,
    pod: { netns: string; containerId: string },
  ): Promise<{ code: number; stdout: string }> {
    const stdin = await this.pluginConfig(n);
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: `/var/run/netns/${pod.netns}`,
      CNI_IFNAME: 'eth0',
      CNI_PATH: n.cniBinDir,
    };
    return new Promise((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', n.netns, join(n.cniBinDir, 'edgemesh')], { env });
      let stdout = '';
      child.stdout.on('data', (d) => {
        stdout += d;
      });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, stdout }));
      child.stdin.end(stdin);
    });
  }

  async addPod(n: TestNode, name: string): Promise<TestPod> {
    const netns = `${this.prefix}${name}`;
    await createNetns(netns);
    this.netnses.push(netns);
    const containerId = `${this.prefix}${name}-container`;
    const res = await this.cni(n, 'ADD', { netns, containerId });
    if (res.code !== 0) throw new Error(`CNI ADD for ${name} failed (${res.code}): ${res.stdout}`);
    const result = JSON.parse(res.stdout) as { ips: Array<{ address: string }> };
    const ips = result.ips.map((i) => i.address.split('/')[0]!);
    const pod: TestPod = { name, node: n, netns, containerId, ip: ips[0]!, ips };
    this.pods.push(pod);
    return pod;
  }

  /** ping from one pod to an address; true when a reply came. */
  async ping(from: TestPod, ip: string, count = 2): Promise<boolean> {
    return tryRun('ip', ['netns', 'exec', from.netns, 'ping', '-c', String(count), '-i', '0.2', '-W', '2', ip]);
  }

  /** The node's IPv6 routes into the cluster's IPv6 CIDR. */
  async podRoutesV6(n: TestNode): Promise<string[]> {
    const out = await run('ip', ['-6', '-n', n.netns, 'route', 'show']);
    return out
      .split('\n')
      .filter((l) => l.startsWith('fd00:99:'))
      .map((l) => l.trim());
  }

  /** The node's routes into the cluster CIDR, as `ip route` prints them. */
  async podRoutes(n: TestNode): Promise<string[]> {
    const out = await run('ip', ['-n', n.netns, 'route', 'show']);
    return out
      .split('\n')
      .filter((l) => l.startsWith('10.99.'))
      .map((l) => l.trim());
  }

  async cleanup(): Promise<void> {
    for (const n of this.nodes) {
      if (n.agent) await this.stopAgent(n, 'SIGKILL').catch(() => undefined);
    }
    if (this.api) {
      this.api.kill('SIGKILL');
      await waitExit(this.api, 5000);
    }
    for (const ns of this.netnses.reverse()) await deleteNetns(ns);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}
