// One node running the agent exactly as a DaemonSet pod would (`edgemesh-cni agent --config`),
// for benchmarks that must measure the product as deployed: the Kubernetes API test server,
// the IPAMBlock CRD and this node's Node object, then the agent, which installs the C client
// and the conflist into the node's CNI directories. Call it from a process that already runs
// inside the node's network namespace (the agent's bridge, TUN, routes and iptables rules
// then live and die with that namespace). stop() ends both processes.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { fetchStatus } from '../../agent/control-api.ts';
import { run } from '../../common/exec.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'bin', 'edgemesh-cni.js');
const API_SERVER = join(ROOT, 'lab', 'kube-apiserver', 'main.ts');
const CRD = join(ROOT, 'deploy', 'crds', 'ipamblock.yaml');

export interface AgentNode {
  /** The installed thin client, as the runtime executes it. */
  client: string;
  /** The first plugin of the installed conflist, as a runtime hands it over on stdin. */
  pluginConf: string;
  cniBinDir: string;
  /** The agent's Prometheus text (its /metrics), read from inside the node namespace. */
  metrics(): Promise<string>;
  /** The agent's pid (for memory and CPU readings). */
  agentPid: number;
  /** The agent's control socket (`fetchStatus`). */
  controlSocket: string;
  logPath: string;
  stop(): Promise<void>;
}

async function stopChild(child: ChildProcess | undefined, ms = 20_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  await exited;
  clearTimeout(timer);
}

/**
 * Brings up the API server and the agent of node `name` (address `nodeIp` already on one
 * of the namespace's interfaces) with its files under `dir`; resolves once the agent is ready.
 */
export async function startAgentNode(opts: {
  dir: string;
  name: string;
  nodeIp: string;
  clusterCidr: string;
  env?: NodeJS.ProcessEnv;
  readyTimeoutMs?: number;
  /** Runs against the API server before the agent starts (e.g. to fill it with Nodes). */
  beforeAgent?: (kubeconfig: string) => Promise<void>;
}): Promise<AgentNode> {
  const { dir, name } = opts;
  const paths = {
    stateDir: join(dir, 'state'),
    runDir: join(dir, 'run'),
    cniBinDir: join(dir, 'cni-bin'),
    cniConfDir: join(dir, 'cni-conf'),
  };
  for (const d of Object.values(paths)) await mkdir(d, { recursive: true, mode: 0o700 });
  const kubeconfig = join(dir, 'kubeconfig');
  const logPath = join(dir, 'agent.log');
  const env = { ...process.env, EDGEMESH_LOG_LEVEL: 'warn', ...opts.env };
  let api: ChildProcess | undefined;
  let agent: ChildProcess | undefined;
  const stop = async () => {
    await stopChild(agent);
    await stopChild(api, 5000);
  };
  try {
    api = spawn(process.execPath, [API_SERVER, '--listen', '127.0.0.1:0', '--kubeconfig-out', kubeconfig], {
      stdio: ['ignore', 'pipe', 'ignore'],
      env,
    });
    const exited = once(api, 'exit').then(([code]) => {
      throw new Error(`the API server exited (${code})`);
    });
    await Promise.race([once(createInterface({ input: api.stdout! }), 'line'), exited]);
    exited.catch(() => {});

    const node = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: { 'kubernetes.io/hostname': name } },
      status: { addresses: [{ type: 'InternalIP', address: opts.nodeIp }] },
    };
    await run('kubectl', ['--kubeconfig', kubeconfig, 'create', '--validate=false', '-f', CRD, '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [node] }),
    });

    await opts.beforeAgent?.(kubeconfig);
    const configPath = join(dir, 'agent.yaml');
    const config = {
      nodeName: name,
      kubeconfig,
      clusterCidrs: [opts.clusterCidr],
      blockPrefixV4: 22,
      site: 'bench',
      nodeIp: opts.nodeIp,
      relay: false,
      overlay: { listen: ['/ip4/0.0.0.0/tcp/4001'], announce: [], punchPort: 4002 },
      paths,
      tun: { name: 'edgemesh0', mtu: 1400, offload: true },
      bridge: { name: 'edgemesh-br0', mtu: 1500 },
      http: { listen: '127.0.0.1:9273' },
    };
    await writeFile(configPath, toYaml(config));
    const log = createWriteStream(logPath);
    agent = spawn(process.execPath, [CLI, 'agent', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env });
    agent.stdout!.pipe(log);
    agent.stderr!.pipe(log);
    const controlSocket = join(paths.runDir, 'agent.sock');
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 90_000);
    for (;;) {
      if (agent.exitCode !== null) throw new Error(`the agent exited (${agent.exitCode}); log: ${logPath}`);
      if ((await fetchStatus(controlSocket).catch(() => undefined))?.ready) break;
      if (Date.now() > deadline) throw new Error(`the agent was not ready in time; log: ${logPath}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const conflist = JSON.parse(await readFile(join(paths.cniConfDir, '10-edgemesh.conflist'), 'utf8'));
    const started = agent;
    return {
      client: join(paths.cniBinDir, 'edgemesh'),
      pluginConf: JSON.stringify({ cniVersion: conflist.cniVersion, name: conflist.name, ...conflist.plugins[0] }),
      cniBinDir: paths.cniBinDir,
      metrics: async () => (await fetch(`http://${config.http.listen}/metrics`)).text(),
      agentPid: started.pid!,
      controlSocket,
      logPath,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Sum and count of a Prometheus histogram's series matching `labels`, from the text format. */
export function histogramTotals(
  text: string,
  metric: string,
  labels: Record<string, string> = {},
): { sum: number; count: number } {
  let sum = 0;
  let count = 0;
  for (const [name, labelText, value] of samples(text)) {
    if (!Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) continue;
    if (name === `${metric}_sum`) sum += value;
    if (name === `${metric}_count`) count += value;
  }
  return { sum, count };
}

/** The value of an unlabelled counter or gauge (0 when absent: prom-client omits untouched counters). */
export function metricValue(text: string, metric: string): number {
  for (const [name, , value] of samples(text)) if (name === metric) return value;
  return 0;
}

function* samples(text: string): Generator<[string, string, number]> {
  for (const line of text.split('\n')) {
    const m = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (m) yield [m[1]!, m[2] ?? '', Number(m[3])];
  }
}
