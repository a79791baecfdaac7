// The lab: an emulated multi-site edge cluster on one machine. labUp() builds the network,
// runs the Kubernetes API test server in its own namespace on the "internet", registers the
// Nodes (as kubelets would), starts one agent per node namespace, and creates pods as
// network namespaces by running the CNI client exactly as a container runtime does.
// The lab wires nothing by hand: every route, bridge and tunnel comes from the agents.
// labDown() removes all of it, also for a lab whose builder crashed (state file).
import { readFileSync } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import type { AgentStatus } from '../agent/status.ts';
import { run, tryRun } from '../common/exec.ts';
import { runPrefix } from '../common/netns.ts';
import { Labels } from '../overlay/annotations.ts';
import {
  type AgentContainerContract,
  checkContainerTools,
  loadAgentContract,
  type NodeBinding,
  podmanRlimitFlags,
  podmanRunArgs,
  prepareHostPaths,
} from './agent-container.ts';
import { CniCallError, type CniTarget, cniAdd, cniDel, resultAddresses } from './cni-runtime.ts';
import { ensureAgentBundle } from './ensure-bundle.ts';
import { buildNetwork, type LabNetwork, type NodeNetwork, planNetwork } from './network.ts';
import { preflight } from './preflight.ts';
import { agentProcessEnv, getUnix, isAlive, startInNetns, tail, waitFor } from './processes.ts';
import {
  cleanupState,
  LabState,
  processStartTime,
  REPO_ROOT,
  type RecordedPod,
  type RecordedProcess,
} from './state.ts';
import { defaultTopology, type ResolvedTopology, type TopologyOverrides } from './topology.ts';

export const CRD_PATH = join(REPO_ROOT, 'deploy/crds/ipamblock.yaml');
const CONFIGMAP_PATH = join(REPO_ROOT, 'deploy/configmap.yaml');
/** What `npm run image` (scripts/image.sh) tags by default. */
export const DEFAULT_AGENT_IMAGE = `localhost/edgemesh-cni:${
  (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version
}`;
const CLI = join(REPO_ROOT, 'bin/edgemesh-cni.js');
const API_SERVER = join(REPO_ROOT, 'lab/kube-apiserver/main.ts');
const OVERLAY_PORT = 4001;

export interface LabNode extends NodeNetwork {
  dir: string;
  configPath: string;
  stateDir: string;
  runDir: string;
  cniBinDir: string;
  cniConfDir: string;
  controlSocket: string;
  logPath: string;
}

export type LabPod = RecordedPod;

export interface LabUpOptions {
  /** A resolved topology; default: the built-in one with `overrides`. */
  topology?: ResolvedTopology;
  overrides?: TopologyOverrides;
  progress?: (line: string) => void;
  /** How long agents may take to become ready (default 60 s). */
  readyTimeoutMs?: number;
  /** Leave everything in place when lab up fails (for debugging); default: clean up. */
  keepOnFailure?: boolean;
  /** Aborting (Ctrl-C) stops lab up at the next step and removes what it made. */
  signal?: AbortSignal;
  /**
   * Run every agent from the agent image under podman, with deploy/daemonset.yaml's container
   * contract (see lab/agent-container.ts), instead of as a process. Default image:
   * DEFAULT_AGENT_IMAGE (`npm run image`).
   */
  containers?: { image?: string };
  /**
   * Node options every agent process starts with, before the CLI: V8 flags to compare
   * (bench/agent-flags.ts). A flag named here wins over the agent's own (bin/agent-runtime.js),
   * as an operator's does. Agents as processes only.
   */
  agentNodeOptions?: string[];
}

function nodeLayout(dir: string, node: NodeNetwork): LabNode {
  const nodeDir = join(dir, 'nodes', node.name);
  return {
    ...node,
    dir: nodeDir,
    configPath: join(nodeDir, 'agent.yaml'),
    stateDir: join(nodeDir, 'state'),
    runDir: join(nodeDir, 'run'),
    cniBinDir: join(nodeDir, 'cni', 'bin'),
    cniConfDir: join(nodeDir, 'cni', 'net.d'),
    controlSocket: join(nodeDir, 'run', 'agent.sock'),
    logPath: join(nodeDir, 'agent.log'),
  };
}

/** The agent's configuration file for one node (the agent config contract). */
export function agentConfig(node: LabNode, topology: ResolvedTopology, kubeconfig: string): Record<string, unknown> {
  return {
    nodeName: node.name,
    kubeconfig,
    clusterCidrs: topology.clusterCidrs,
    blockPrefixV4: 24,
    blockPrefixV6: 112,
    site: node.site,
    nodeIp: node.ip,
    relay: node.relay,
    overlay: {
      listen: [`/ip4/0.0.0.0/tcp/${OVERLAY_PORT}`],
      // Behind NAT a node has no address of its own to announce.
      announce: node.publicIp ? [`/ip4/${node.publicIp}/tcp/${OVERLAY_PORT}`] : [],
      // No punchPort: each agent draws its own at first start and keeps it in its state
      // directory (behind one NAT, nodes sharing a port cannot all punch).
      ...(node.transport ? { transport: node.transport } : {}),
    },
    paths: { stateDir: node.stateDir, runDir: node.runDir, cniBinDir: node.cniBinDir, cniConfDir: node.cniConfDir },
    tun: { name: 'edgemesh0', offload: true }, // mtu: auto (the underlay's, less the UDP overhead)
    bridge: { name: 'edgemesh-br0', mtu: 1500 },
    http: { listen: '127.0.0.1:9273' },
  };
}

/** The Node object a kubelet would register for this node. */
export function nodeManifest(node: NodeNetwork): Record<string, unknown> {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: node.name,
      labels: {
        'kubernetes.io/hostname': node.name,
        'kubernetes.io/os': 'linux',
        'topology.kubernetes.io/zone': node.site,
        [Labels.site]: node.site,
        ...(node.relay ? { [Labels.relay]: 'true' } : {}),
      },
    },
    status: {
      // No kubelet runs in the lab: the lab stands in for it and reports the node fit for pods.
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'LabNode',
          message: 'emulated node: the lab creates its pods through the CNI client',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
      nodeInfo: {
        architecture: process.arch === 'x64' ? 'amd64' : process.arch,
        operatingSystem: 'linux',
        osImage: 'edgemesh-cni lab (network namespace)',
        kernelVersion: release(),
        kubeletVersion: 'v1.32.0-lab',
        kubeProxyVersion: '',
        containerRuntimeVersion: 'lab://netns',
        bootID: '',
        machineID: '',
        systemUUID: '',
      },
      addresses: [
        { type: 'InternalIP', address: node.ip },
        // Dual-stack nodes have an InternalIP per family, as kubelets report them.
        ...(node.ipv6 ? [{ type: 'InternalIP', address: node.ipv6 }] : []),
        ...(node.publicIp ? [{ type: 'ExternalIP', address: node.publicIp }] : []),
        { type: 'Hostname', address: node.name },
      ],
    },
  };
}

export class Lab {
  readonly state: LabState;
  readonly network: LabNetwork;
  readonly nodes: LabNode[];
  /** When an agent of this lab was last seen become ready (epoch ms; 0: none yet). */
  lastAgentReadyAt = 0;

  constructor(state: LabState, network: LabNetwork) {
    this.state = state;
    this.network = network;
    this.nodes = network.nodes.map((n) => nodeLayout(state.data.dir, n));
  }

  get id(): string {
    return this.state.data.id;
  }

  get dir(): string {
    return this.state.data.dir;
  }

  get prefix(): string {
    return this.state.data.prefix;
  }

  get topology(): ResolvedTopology {
    return this.network.topology;
  }

  get pods(): LabPod[] {
    return this.state.data.pods;
  }

  get kubeconfig(): string {
    return join(this.dir, 'kubeconfig');
  }

  get apiUrl(): string {
    return `http://${this.topology.apiServer.ip}:${this.topology.apiServer.port}`;
  }

  /** Re-opens a running lab from its state file (the CLI's status/exec/down). */
  static async attach(id?: string): Promise<Lab> {
    let state: LabState;
    if (id) state = await LabState.load(id);
    else {
      const all = await LabState.all();
      if (all.length === 0)
        throw new Error('no lab is up (no .lab/*/state.json): start one with `edgemesh-cni lab up`');
      state = all[all.length - 1]!;
    }
    const topology = state.data.info.topology as ResolvedTopology | undefined;
    if (!topology) throw new Error(`lab ${state.data.id} has no recorded topology (it crashed early): \`lab down\``);
    return new Lab(state, planNetwork(topology, state.data.prefix));
  }

  node(name: string): LabNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name} (nodes: ${this.nodes.map((n) => n.name).join(', ')})`);
    return node;
  }

  pod(name: string): LabPod {
    const pod = this.pods.find((p) => p.name === name);
    if (!pod) throw new Error(`no pod ${name} (pods: ${this.pods.map((p) => p.name).join(', ')})`);
    return pod;
  }

  /**
   * The namespace of a pod, a node, a site's router (`rtr-a`, `router:edge-a` or the site
   * name), `inet` or `api`.
   */
  netnsOf(target: string): string {
    const pod = this.pods.find((p) => p.name === target);
    if (pod) return pod.netns;
    const node = this.nodes.find((n) => n.name === target);
    if (node) return node.netns;
    const router = this.network.routers.find(
      (r) => target === r.site || target === `router:${r.site}` || target === r.netnsSuffix,
    );
    if (router) return router.netns;
    if (target === 'inet' || target === 'internet') return this.network.inetNetns;
    if (target === 'api') return this.network.apiNetns;
    const known = [...this.pods.map((p) => p.name), ...this.nodes.map((n) => n.name)];
    throw new Error(
      `unknown lab target ${target}: a pod, a node, a site's router (rtr-a), inet or api (${known.join(', ')})`,
    );
  }

  /** kubectl against the lab's API server (run inside the API server's namespace). */
  kubectl(args: string[], input?: string): Promise<string> {
    return run('ip', ['netns', 'exec', this.network.apiNetns, 'kubectl', '--kubeconfig', this.kubeconfig, ...args], {
      ...(input === undefined ? {} : { input }),
    });
  }

  /** An agent's `GET /status`. */
  async agentStatus(nodeName: string): Promise<AgentStatus> {
    const node = this.node(nodeName);
    const { status, body } = await getUnix(node.controlSocket, '/status');
    if (status !== 200) throw new Error(`agent ${nodeName}: GET /status answered ${status}: ${body.slice(0, 200)}`);
    return JSON.parse(body) as AgentStatus;
  }

  cniTarget(pod: { node: string; containerId: string; netns: string }): CniTarget {
    const node = this.node(pod.node);
    return {
      hostNetns: node.netns,
      binDir: node.cniBinDir,
      confDir: node.cniConfDir,
      cacheDir: join(this.dir, 'cni-cache'),
      containerId: pod.containerId,
      netnsPath: `/run/netns/${pod.netns}`,
      ifName: 'eth0',
    };
  }

  /** Creates a pod: its namespace, then CNI ADD through the node's conflist (retrying "try again later"). */
  async createPod(name: string, nodeName: string, timeoutMs = 30_000): Promise<LabPod> {
    const node = this.node(nodeName);
    const spec = this.topology.nodes.flatMap((n) => n.pods).find((p) => p.name === name);
    const pod: LabPod = {
      name,
      node: node.name,
      netns: this.prefix + (spec?.netnsSuffix ?? `p-${name}`),
      containerId: `${this.id}-${name}`,
      ips: [],
    };
    await this.state.recordNamespaces([pod.netns]);
    await this.state.recordPod(pod);
    await run('ip', ['netns', 'add', pod.netns]);
    await run('ip', ['-n', pod.netns, 'link', 'set', 'lo', 'up']);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const result = await cniAdd(this.cniTarget(pod));
        pod.ips = resultAddresses(result);
        break;
      } catch (err) {
        // 11 = try again later (agent not serving yet): what a runtime retries.
        if (!(err instanceof CniCallError && err.code === 11) || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
    await this.state.recordPod(pod);
    return pod;
  }

  /** CNI DEL (as a runtime does when a pod goes away), then the namespace. */
  async deletePod(name: string): Promise<void> {
    const pod = this.pod(name);
    try {
      await cniDel(this.cniTarget(pod), { timeoutMs: 10_000 });
    } finally {
      await run('ip', ['netns', 'del', pod.netns]).catch(() => {});
      this.state.data.pods = this.state.data.pods.filter((p) => p.name !== name);
      await this.state.save();
    }
  }

  /** Runs a command inside a pod, node, router, inet or api namespace. */
  exec(target: string, argv: string[], input?: string): Promise<string> {
    const [file, ...args] = argv;
    if (!file) throw new Error('nothing to run');
    return run('ip', ['netns', 'exec', this.netnsOf(target), file, ...args], input === undefined ? {} : { input });
  }

  /** The recorded process of a node's agent (the newest start). */
  agentProcess(nodeName: string): RecordedProcess | undefined {
    return this.state.data.processes.filter((p) => p.name === `agent ${nodeName}`).at(-1);
  }

  /** The agent image when the agents run as containers (`lab up --containers`). */
  get agentImage(): string | undefined {
    return this.state.data.info.agentImage as string | undefined;
  }

  /** The Node options the agents start with (LabUpOptions.agentNodeOptions). */
  get agentNodeOptions(): string[] {
    return (this.state.data.info.agentNodeOptions as string[] | undefined) ?? [];
  }

  /** The podman container of a node's agent (container mode). */
  agentContainerName(nodeName: string): string {
    return `${this.prefix}agent-${nodeName}`;
  }

  /** Where the node's "ConfigMap" lives (mounted where the DaemonSet mounts edgemesh-config). */
  agentConfigDir(nodeName: string): string {
    return join(this.node(nodeName).dir, 'config');
  }

  /** How this lab's node stands in for a real node under the DaemonSet's container contract. */
  agentBinding(nodeName: string, contract: AgentContainerContract): NodeBinding {
    const node = this.node(nodeName);
    const image = this.agentImage;
    if (!image) throw new Error(`lab ${this.id} runs its agents as processes, not containers`);
    // The DaemonSet's host directories are the ConfigMap's paths (test/unit/agent/deploy.test.ts):
    // each is replaced by this node's own directory.
    const cm = parseYaml(readFileSync(CONFIGMAP_PATH, 'utf8')) as { data: Record<string, string> };
    const paths = (parseYaml(cm.data['agent.yaml'] ?? '') as { paths: Record<string, string> }).paths;
    const nodePaths: Record<string, string> = {
      stateDir: node.stateDir,
      runDir: node.runDir,
      cniBinDir: node.cniBinDir,
      cniConfDir: node.cniConfDir,
    };
    const hostPaths = Object.fromEntries(
      Object.entries(paths).map(([key, path]) => {
        const mine = nodePaths[key];
        if (!mine) throw new Error(`deploy/configmap.yaml: paths.${key} has no per-node directory in the lab`);
        return [path, mine];
      }),
    );
    const configMaps = Object.fromEntries(
      contract.mounts.flatMap((m) =>
        'configMap' in m.source ? [[m.source.configMap, this.agentConfigDir(nodeName)]] : [],
      ),
    );
    return {
      containerName: this.agentContainerName(nodeName),
      image,
      netnsPath: `/run/netns/${node.netns}`,
      fields: {
        'spec.nodeName': node.name,
        'spec.serviceAccountName': 'edgemesh',
        'metadata.namespace': 'kube-system',
        'status.hostIP': node.ip,
        'status.podIP': node.ip, // host network: the pod's IP is the node's
      },
      hostPaths,
      configMaps,
      logPath: node.logPath,
      labels: { 'io.edgemesh.lab': this.id },
      // Debian's crun cannot set rlimits on these machines; runc can, within the ceilings.
      runtimeFlags: ['--runtime', 'runc', ...podmanRlimitFlags()],
    };
  }

  /** Starts a node's agent container (podman run) and records its main process. */
  private async startAgentContainer(nodeName: string): Promise<RecordedProcess> {
    const contract = loadAgentContract();
    const binding = this.agentBinding(nodeName, contract);
    await prepareHostPaths(contract, binding);
    await run('podman', podmanRunArgs(contract, binding), { timeoutMs: 120_000 });
    return this.recordAgentContainer(nodeName);
  }

  /** The running container's main process (podman inspect), once it runs. */
  private async containerProcess(nodeName: string): Promise<{ pid: number; restarts: number; status: string }> {
    const out = await run('podman', [
      'inspect',
      '--format',
      '{{.State.Pid}} {{.RestartCount}} {{.State.Status}}',
      this.agentContainerName(nodeName),
    ]);
    const [pid, restarts, status] = out.trim().split(' ');
    return { pid: Number(pid), restarts: Number(restarts), status: status ?? '' };
  }

  private async recordAgentContainer(nodeName: string, notPid?: number): Promise<RecordedProcess> {
    const node = this.node(nodeName);
    const pid = await waitFor(
      async () => {
        const c = await this.containerProcess(nodeName);
        return c.status === 'running' && c.pid > 0 && c.pid !== notPid ? c.pid : undefined;
      },
      {
        timeoutMs: 60_000,
        intervalMs: 100,
        onTimeout: async () =>
          new Error(`agent container of ${nodeName} is not running (podman):\n${await tail(node.logPath)}`),
      },
    );
    const p = { name: `agent ${nodeName}`, pid, startTime: (await processStartTime(pid)) ?? '', netns: node.netns };
    await this.state.recordProcess(p);
    return p;
  }

  /**
   * Container mode: after the agent's process died, waits for podman to restart the
   * container (its restart policy is the DaemonSet's) and records the new process.
   */
  async waitAgentRestarted(nodeName: string, previous: RecordedProcess): Promise<RecordedProcess> {
    if (!this.agentImage) throw new Error('only containers restart by themselves; use startAgent');
    return this.recordAgentContainer(nodeName, previous.pid);
  }

  /** Starts a node's agent (again) in its namespace, with its config file; returns at once. */
  async startAgent(nodeName: string): Promise<RecordedProcess> {
    if (this.agentImage) return this.startAgentContainer(nodeName);
    const node = this.node(nodeName);
    const argv = [process.execPath, ...this.agentNodeOptions, CLI, 'agent', '--config', node.configPath];
    return startInNetns(
      this.state,
      `agent ${node.name}`,
      node.netns,
      argv,
      { stdout: node.logPath, stderr: node.logPath },
      agentProcessEnv(),
    );
  }

  /** Signals a node's agent (SIGKILL by default: a crash) and waits until it is gone. */
  async killAgent(nodeName: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.agentProcess(nodeName);
    if (!p || !(await isAlive(p))) return;
    process.kill(p.pid, signal);
    await waitFor(async () => ((await isAlive(p)) ? undefined : true), {
      timeoutMs: 10_000,
      intervalMs: 50,
      onTimeout: async () => new Error(`agent ${nodeName} (pid ${p.pid}) did not exit after ${signal}`),
    });
  }

  /** Waits until a node's agent answers `GET /status` as ready; fails early if it exits. */
  async waitAgentReady(nodeName: string, timeoutMs = 60_000, signal?: AbortSignal): Promise<AgentStatus> {
    const node = this.node(nodeName);
    const proc = this.agentProcess(nodeName);
    return waitFor(
      async () => {
        const status = await this.agentStatus(nodeName);
        if (status.ready === false) return undefined;
        this.lastAgentReadyAt = Date.now();
        return status;
      },
      {
        timeoutMs,
        intervalMs: 250,
        dead: async () => {
          if (this.agentImage) {
            // The runtime restarts a crashing container: fail only on a crash loop.
            const c = await this.containerProcess(nodeName).catch(() => undefined);
            return !c || c.restarts >= 5
              ? new Error(`agent container of ${nodeName} crash-loops:\n${await tail(node.logPath)}`)
              : undefined;
          }
          return proc && !(await isAlive(proc))
            ? new Error(`agent ${nodeName} exited:\n${await tail(node.logPath)}`)
            : undefined;
        },
        onTimeout: async () =>
          new Error(`agent ${nodeName} not ready within ${timeoutMs / 1000} s:\n${await tail(node.logPath)}`),
        ...(signal ? { signal } : {}),
      },
    );
  }

  /** Nodes whose agent (its newest start) is not running. */
  async deadAgents(): Promise<string[]> {
    const dead: string[] = [];
    for (const node of this.nodes) {
      const p = this.agentProcess(node.name);
      if (p && !(await isAlive(p))) dead.push(node.name);
    }
    return dead;
  }

  down(): Promise<DownReport> {
    return tearDown(this.state, this);
  }
}

export interface DownReport {
  id: string;
  pods: number;
  namespaces: string[];
  processes: number;
}

async function tearDown(state: LabState, lab?: Lab): Promise<DownReport> {
  let pods = 0;
  if (lab && state.data.phase !== 'tearing-down') {
    // DEL every pod while the agents still run, as a runtime would; bounded, best effort.
    const results = await Promise.allSettled(lab.pods.map((p) => cniDel(lab.cniTarget(p), { timeoutMs: 5000 })));
    pods = results.filter((r) => r.status === 'fulfilled').length;
  }
  // Agent containers go before their processes are killed (podman would restart them) and
  // before their namespaces. Names were recorded before the containers were created.
  const containers = (state.data.info.agentContainers as string[] | undefined) ?? [];
  if (containers.length) await tryRun('podman', ['rm', '--force', '--ignore', '--time', '0', ...containers]);
  const { namespaces, processes } = await cleanupState(state);
  return { id: state.data.id, pods, namespaces, processes };
}

/** Brings a whole lab up; on failure removes what it made (unless keepOnFailure) and rethrows. */
export async function labUp(opts: LabUpOptions = {}): Promise<Lab> {
  const progress = opts.progress ?? (() => {});
  const started = Date.now();
  const stamp = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
  const say = (line: string) => progress(`[${stamp()}] ${line}`);
  const topology = opts.topology ?? defaultTopology(opts.overrides);
  await preflight({ needTc: [...topology.routers, ...topology.nodes].some((x) => x.netem) });
  if (opts.containers) await checkContainerTools(opts.containers.image ?? DEFAULT_AGENT_IMAGE);
  else {
    const built = await ensureAgentBundle();
    if (built) say(built.split('\n').at(-1) ?? built);
  }

  const prefix = runPrefix('em');
  const id = prefix.slice(0, -1);
  const state = await LabState.create(id, prefix);
  await state.setInfo('topology', topology);
  if (opts.containers) await state.setInfo('agentImage', opts.containers.image ?? DEFAULT_AGENT_IMAGE);
  if (opts.agentNodeOptions?.length) await state.setInfo('agentNodeOptions', opts.agentNodeOptions);
  say(
    `lab ${id}: ${topology.nodes.length} nodes in ${new Set(topology.nodes.map((n) => n.site)).size} sites, state in ${state.data.dir}`,
  );
  try {
    // Node processes take seconds to load (tens of seconds on a busy 2-core machine), so the
    // API server and the agents start as soon as their namespaces exist, while the links
    // are made; the agents wait for the API server and their Node like DaemonSet pods do.
    let lab: Lab | undefined;
    let apiServer: Promise<void> | undefined;
    const network = await buildNetwork(topology, prefix, {
      record: (names) => state.recordNamespaces(names),
      progress: say,
      afterNamespaces: async (net) => {
        lab = new Lab(state, net);
        await writeKubeconfig(lab);
        apiServer = startApiServer(lab, say);
        apiServer.catch(() => {}); // awaited below
        await launchAgents(lab, say);
      },
    });
    lab ??= new Lab(state, network);
    const checkpoint = () => opts.signal?.throwIfAborted();
    checkpoint();
    await apiServer;
    checkpoint();
    await registerCluster(lab, say);
    await waitAgents(lab, say, opts.readyTimeoutMs ?? 60_000, opts.signal);
    checkpoint();
    await createPods(lab, say);
    checkpoint();
    await state.setPhase('up');
    say(`lab ${id} is up`);
    return lab;
  } catch (err) {
    await state.setPhase('failed').catch(() => {});
    if (!opts.keepOnFailure) {
      say(`lab up failed, removing lab ${id}`);
      await tearDown(state);
    }
    throw err;
  }
}

/**
 * The kubeconfig every agent (and kubectl) uses, written by the lab before anything starts
 * so an agent never races the API server for the file. Plain HTTP: client-node 2.x needs
 * insecure-skip-tls-verify to accept an http:// server.
 */
async function writeKubeconfig(lab: Lab): Promise<void> {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'edgemesh-lab', cluster: { server: lab.apiUrl, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'lab-admin', user: { token: 'lab-admin' } }],
    contexts: [{ name: 'edgemesh-lab', context: { cluster: 'edgemesh-lab', user: 'lab-admin' } }],
    'current-context': 'edgemesh-lab',
  };
  await writeFile(lab.kubeconfig, toYaml(config), { mode: 0o600 });
}

async function startApiServer(lab: Lab, say: (line: string) => void): Promise<void> {
  const { port } = lab.topology.apiServer;
  const out = join(lab.dir, 'kube-apiserver.out');
  const log = join(lab.dir, 'kube-apiserver.log');
  const p = await startInNetns(
    lab.state,
    'kube-apiserver',
    lab.network.apiNetns,
    [process.execPath, API_SERVER, '--listen', `0.0.0.0:${port}`],
    { stdout: out, stderr: log },
  );
  await waitFor(
    async () => ((await readFile(out, 'utf8').catch(() => '')).includes('"ready":true') ? true : undefined),
    {
      timeoutMs: 20_000,
      intervalMs: 100,
      dead: async () => ((await isAlive(p)) ? undefined : new Error(`the API server exited:\n${await tail(log)}`)),
      onTimeout: async () => new Error(`the API server did not get ready within 20 s:\n${await tail(log)}`),
    },
  );
  await lab.state.setInfo('apiUrl', lab.apiUrl);
  say(`API server: ${lab.apiUrl} (namespace ${lab.network.apiNetns}), kubeconfig ${lab.kubeconfig}`);
}

async function registerCluster(lab: Lab, say: (line: string) => void): Promise<void> {
  await access(CRD_PATH).catch(() => {
    throw new Error(`${CRD_PATH} is missing: the IPAMBlock CRD ships with the repository (deploy/crds/)`);
  });
  const list = { apiVersion: 'v1', kind: 'List', items: lab.nodes.map((n) => nodeManifest(n)) };
  // One kubectl for the CRD and the Nodes. The test server publishes no OpenAPI schema for
  // core types, so client-side validation is off.
  await lab.kubectl(['create', '--validate=false', '-f', CRD_PATH, '-f', '-'], JSON.stringify(list));
  say(
    `registered the IPAMBlock CRD and ${lab.nodes.length} Nodes (${lab.nodes
      .filter((n) => n.relay)
      .map((n) => n.name)
      .join(', ')} labelled ${Labels.relay}=true)`,
  );
}

async function launchAgents(lab: Lab, say: (line: string) => void): Promise<void> {
  const contract = lab.agentImage ? loadAgentContract() : undefined;
  if (contract)
    await lab.state.setInfo(
      'agentContainers',
      lab.nodes.map((n) => lab.agentContainerName(n.name)),
    );
  for (const node of lab.nodes) {
    await mkdir(node.runDir, { recursive: true, mode: 0o700 });
    await mkdir(node.stateDir, { recursive: true, mode: 0o700 });
    await mkdir(node.cniBinDir, { recursive: true });
    await mkdir(node.cniConfDir, { recursive: true });
    if (!contract) {
      await writeFile(node.configPath, toYaml(agentConfig(node, lab.topology, lab.kubeconfig)));
      continue;
    }
    // Container mode: the "ConfigMap" directory holds agent.yaml and the kubeconfig (what a
    // Secret would carry); the node's name comes from NODE_NAME (the downward API), not the file.
    const configMount = contract.mounts.find((m) => 'configMap' in m.source)?.mountPath;
    if (!configMount)
      throw new Error('deploy/daemonset.yaml mounts no ConfigMap: where does the agent read its config?');
    const dir = lab.agentConfigDir(node.name);
    await mkdir(dir, { recursive: true });
    const { nodeName: _fromEnv, ...config } = agentConfig(node, lab.topology, join(configMount, 'kubeconfig'));
    await writeFile(join(dir, 'agent.yaml'), toYaml(config));
    await writeFile(join(dir, 'kubeconfig'), await readFile(lab.kubeconfig), { mode: 0o600 });
  }
  await Promise.all(lab.nodes.map((node) => lab.startAgent(node.name)));
  say(
    `agents: started ${lab.nodes.length}${lab.agentImage ? ` containers from ${lab.agentImage} (podman)` : ''} (logs in ${join(lab.dir, 'nodes', '<node>', 'agent.log')})`,
  );
}

async function waitAgents(
  lab: Lab,
  say: (line: string) => void,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  await Promise.all(
    lab.nodes.map(async (node) => {
      const t0 = Date.now();
      const status = await lab.waitAgentReady(node.name, timeoutMs, signal);
      say(
        `agent ${node.name} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: pod CIDRs ${status.podCidrs.join(', ')}`,
      );
    }),
  );
}

async function createPods(lab: Lab, say: (line: string) => void): Promise<void> {
  const specs = lab.topology.nodes.flatMap((n) => n.pods);
  if (specs.length === 0) return;
  // All pods at once, as a busy cluster schedules them (the agents serialise IPAM themselves).
  await Promise.all(
    specs.map(async (spec) => {
      const pod = await lab.createPod(spec.name, spec.node);
      say(`pod ${pod.name} on ${pod.node}: ${pod.ips.join(', ')}`);
    }),
  );
}

/**
 * Tears labs down: the one named, or every lab under .lab/ (including half-built and
 * crashed ones). Pods get a CNI DEL first when their agents still run.
 */
export async function labDown(id?: string): Promise<DownReport[]> {
  const states = id ? [await LabState.load(id)] : await LabState.all();
  const reports: DownReport[] = [];
  for (const state of states) {
    let lab: Lab | undefined;
    try {
      lab = await Lab.attach(state.data.id);
    } catch {
      lab = undefined; // crashed before the topology was recorded: clean up by the record alone
    }
    reports.push(await tearDown(state, lab));
  }
  return reports;
}
