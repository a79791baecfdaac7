// Idle memory of one agent as deployed: `edgemesh-cni agent` on a node namespace with the
// Kubernetes API test server, its block claimed, its TUN and libp2p host up, no traffic.
// Reports RSS and the V8 heap (from the agent's own metrics) after it has settled, running
// from its bundle (build/agent.js, built first when not current: bin/agent-bundle.js), against
// the target of issue #16; then the same agent from its sources (EDGEMESH_AGENT_FROM_SOURCES=1,
// at a start after the one that filled its source cache), what the bundle is worth. RSS counts
// the Node binary's resident pages (shared with every other Node process) like `ps` and the
// kubelet's working set do. Each figure says which code the agent ran (its own start-up log).
// Then an agent that starts in a cluster of 5,000 Nodes (emulated peers as
// bench/control-plane.ts has them, each with a pod CIDR the agent routes): the issue's
// target at scale, for the whole agent.
// Then the same for every agent of the default lab (`npm start`: six nodes, pods, the
// reachability matrix), the matrix's traffic done: shortly after, and once the agents count
// as idle (their idle trimmer has released, 90 s after): what the target is about.
//   node bench/agent-memory.ts [--settle-seconds 20] [--nodes 5000] [--no-lab]      (root)
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fetchStatus } from '../agent/control-api.ts';
import { run } from '../common/exec.ts';
import { KubeClient, KubeConfig } from '../common/kube/client.ts';
import { createNetns, deleteNetnsWithPrefix, runPrefix } from '../common/netns.ts';
import { ensureAgentBundle } from '../lab/ensure-bundle.ts';
import { labUp } from '../lab/lab.ts';
import { runMatrix } from '../lab/matrix.ts';
import { metricValue, startAgentNode } from './lib/agent-node.ts';
import { rssKiB } from './lib/memory.ts';
import { createNodes } from './lib/peer-nodes.ts';

const NODE_IP = '192.168.77.11';
const MiB = 1024 * 1024;
/** Issue #16: an idle agent in the default lab, in MB as the issue writes it. */
const TARGET_RSS_MB = 100;
/** Issue #16: an agent in a cluster of 5,000 Nodes, in MB. */
const TARGET_SCALE_RSS_MB = 150;
/** Scrapes of the 5,000-Node agent's metrics, 5 s apart, as a Prometheus would. */
const SCRAPES = 6;

/**
 * An RSS in MiB against a target in MB, in both readings of "MB": as MiB (what ps and top
 * call MB) and as 10⁶ bytes, the stricter one (100 MB = 95.4 MiB).
 */
function against(rssMiB: number, targetMB: number): string {
  const asMiB = rssMiB <= targetMB ? 'met' : 'MISSED';
  const asDecimal = (rssMiB * MiB) / 1e6 <= targetMB ? 'met' : 'MISSED';
  return `target ≤ ${targetMB} MB: ${asMiB} as MiB, ${asDecimal} as 10⁶ B`;
}

/** The fields of the first line of the agent's JSON log with message `msg`; undefined when it never logged one. */
async function logged<T>(logPath: string, msg: string): Promise<T | undefined> {
  for (const line of (await readFile(logPath, 'utf8')).split('\n')) {
    if (line.includes(`"msg":"${msg}"`)) return JSON.parse(line) as T;
  }
  return undefined;
}

/** What the agent logged of its start-up memory release: how long forwarding waited at most. */
async function startupRelease(logPath: string): Promise<string> {
  const release = await logged<{ ms: number; longestCollectionMs: number }>(logPath, 'released start-up memory');
  if (!release) return 'start-up memory release: not logged';
  return `start-up memory release: ${release.ms} ms in all, the longest collection (the event loop held) ${release.longestCollectionMs} ms`;
}

/** Which code the agent ran, from its start-up log (agent/run.ts). */
async function codeRun(logPath: string): Promise<string> {
  return (await logged<{ code: string }>(logPath, 'agent starting'))?.code ?? 'not logged';
}

/** glibc's main heap (`[heap]`): resident KiB. */
async function mallocHeapKiB(pid: number): Promise<number> {
  const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const heap = /\[heap\]\n(?:.*\n)*?Rss:\s+(\d+) kB/.exec(smaps);
  return Number(heap?.[1] ?? 0);
}

/** The process's anonymous (private) memory and its proportional share of file pages, in KiB. */
async function smapsKiB(pid: number): Promise<{ anonymous: number; pssFile: number }> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(rollup)?.[1] ?? Number.NaN);
  return { anonymous: field('Anonymous'), pssFile: field('Pss_File') };
}

/** Starts the agent once and stops it as soon as it is ready (what a start leaves on disk, e.g. its source cache). */
async function startOnce(dir: string, env: NodeJS.ProcessEnv): Promise<void> {
  const node = await startAgentNode({ dir, name: 'mem-node', nodeIp: NODE_IP, clusterCidr: '10.244.0.0/16', env });
  await node.stop();
}

async function measureOnce(dir: string, settleSeconds: number, env: NodeJS.ProcessEnv, label: string): Promise<void> {
  const node = await startAgentNode({
    dir,
    name: 'mem-node',
    nodeIp: NODE_IP,
    clusterCidr: '10.244.0.0/16',
    // The DaemonSet's log level (deploy/daemonset.yaml), not the quieter one of other benches.
    env: { ...env, EDGEMESH_LOG_LEVEL: 'info' },
  });
  try {
    await new Promise((r) => setTimeout(r, settleSeconds * 1000));
    const metrics = await node.metrics();
    const m = (name: string) => metricValue(metrics, `edgemesh_${name}`) / MiB;
    const rss = (await rssKiB(node.agentPid)) / 1024;
    const { anonymous, pssFile } = await smapsKiB(node.agentPid);
    console.log(`idle agent, ${label}, after ${settleSeconds} s (one node, no peers, no traffic):`);
    console.log(`  code run: ${await codeRun(node.logPath)}`);
    console.log(
      `  RSS ${rss.toFixed(1)} MiB (${against(rss, TARGET_RSS_MB)}); ` +
        `anonymous ${(anonymous / 1024).toFixed(1)} MiB, the rest file pages (mostly the Node binary, ` +
        `shared: this process's share ${(pssFile / 1024).toFixed(1)} MiB)`,
    );
    console.log(
      `  V8 heap: total ${m('nodejs_heap_size_total_bytes').toFixed(1)} MiB, used ${m('nodejs_heap_size_used_bytes').toFixed(1)} MiB, ` +
        `external ${m('nodejs_external_memory_bytes').toFixed(1)} MiB`,
    );
    console.log(`  ${await startupRelease(node.logPath)}`);
    for (const line of metrics.split('\n')) {
      const space = /^edgemesh_nodejs_heap_space_size_(total|used)_bytes\{space="(\w+)"\} (\S+)$/.exec(line);
      if (space && Number(space[3]) > MiB)
        console.log(`    ${space[2]} ${space[1]} ${(Number(space[3]) / MiB).toFixed(1)} MiB`);
    }
  } finally {
    await node.stop();
  }
}

/** The agent started in a cluster of `nodes` peer Nodes, once it routes every one's pod CIDR and has settled. */
async function measureScale(dir: string, settleSeconds: number, nodes: number): Promise<void> {
  // Peers from index 1024 on: pod CIDRs 10.4.0.0/24 and up, clear of this node's own block (10.0.0.0/22).
  const first = 1024;
  const started = Date.now();
  const node = await startAgentNode({
    dir,
    name: 'mem-node',
    nodeIp: NODE_IP,
    clusterCidr: '10.0.0.0/8',
    env: { EDGEMESH_LOG_LEVEL: 'info' },
    readyTimeoutMs: 300_000,
    beforeAgent: async (kubeconfig) => {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig);
      const api = new KubeClient(kc);
      for (let from = first; from < first + nodes; from += 500) {
        await createNodes(api, from, Math.min(from + 500, first + nodes));
        console.log(
          `  [scale] ${from + 500 - first}/${nodes} Nodes created (${((Date.now() - started) / 1000).toFixed(0)} s)`,
        );
      }
    },
  });
  try {
    const ready = Date.now();
    const deadline = ready + 300_000;
    for (;;) {
      const status = await fetchStatus(node.controlSocket);
      const routed = status.peers.filter((p) => p.podCidrs.length > 0).length;
      if (routed >= nodes) break;
      if (Date.now() > deadline) throw new Error(`only ${routed}/${nodes} peers routed after 5 min`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    console.log(`  [scale] every peer routed ${((Date.now() - ready) / 1000).toFixed(0)} s after the agent was ready`);
    await new Promise((r) => setTimeout(r, settleSeconds * 1000));
    // Read before the agent serves its metrics (a scrape of 5,000 peers' series allocates), and after.
    const rss = (await rssKiB(node.agentPid)) / 1024;
    const { anonymous } = await smapsKiB(node.agentPid);
    const mallocHeap = (await mallocHeapKiB(node.agentPid)) / 1024;
    const metrics = await node.metrics();
    const m = (name: string) => metricValue(metrics, `edgemesh_${name}`) / MiB;
    // Then scraped as a Prometheus would, every 5 s (RSS 1 s after each scrape).
    const scraped: number[] = [];
    for (let i = 0; i < SCRAPES; i++) {
      if (i > 0) await node.metrics();
      await new Promise((r) => setTimeout(r, 1000));
      scraped.push((await rssKiB(node.agentPid)) / 1024);
      await new Promise((r) => setTimeout(r, 4000));
    }
    console.log(
      `agent started in a cluster of ${nodes} Nodes, every peer routed, after ${settleSeconds} s (the whole agent):`,
    );
    console.log(`  code run: ${await codeRun(node.logPath)}`);
    console.log(
      `  RSS ${rss.toFixed(1)} MiB (${against(rss, TARGET_SCALE_RSS_MB)}); anonymous ${(anonymous / 1024).toFixed(1)} MiB: ` +
        `V8 heap total ${m('nodejs_heap_size_total_bytes').toFixed(1)} MiB (used ${m('nodejs_heap_size_used_bytes').toFixed(1)}), ` +
        `glibc's main heap ${mallocHeap.toFixed(1)} MiB, external ${m('nodejs_external_memory_bytes').toFixed(1)} MiB`,
    );
    console.log(
      `  RSS 1 s after each of ${SCRAPES} scrapes of its metrics, 5 s apart (${(metrics.length / 1e6).toFixed(2)} MB of text): ` +
        `${scraped.map((r) => r.toFixed(1)).join(', ')} MiB (${against(Math.max(...scraped), TARGET_SCALE_RSS_MB)})`,
    );
  } finally {
    await node.stop();
  }
}

async function inner(dir: string, settleSeconds: number, nodes: number): Promise<void> {
  await measureOnce(join(dir, 'bundle'), settleSeconds, {}, 'as deployed (from its bundle)');
  const sources = { EDGEMESH_AGENT_FROM_SOURCES: '1', EDGEMESH_SOURCE_CACHE: join(dir, 'source-cache') };
  console.log('  (starting the agent from its sources once, to fill its source cache)');
  await startOnce(join(dir, 'sources-first'), sources);
  await measureOnce(
    join(dir, 'sources'),
    settleSeconds,
    sources,
    'from its sources, for comparison (source cache filled)',
  );
  if (nodes > 0) await measureScale(join(dir, 'scale'), settleSeconds, nodes);
}

async function outer(settleSeconds: number, nodes: number): Promise<void> {
  console.log((await ensureAgentBundle()) || "the agent's bundle (build/agent.js) is current");
  const prefix = runPrefix('mm');
  const netns = `${prefix}node`;
  const dir = await mkdtemp(join(tmpdir(), `${prefix}agent-memory-`));
  try {
    await createNetns(netns);
    await run('ip', ['-n', netns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0-peer']);
    await run('ip', ['-n', netns, 'link', 'set', 'eth0-peer', 'up']);
    await run('ip', ['-n', netns, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        netns,
        process.execPath,
        fileURLToPath(import.meta.url),
        '--inner',
        dir,
        String(settleSeconds),
        String(nodes),
      ],
      { stdio: 'inherit' },
    );
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    if (code !== 0) throw new Error(`measurement failed (exit ${code})`);
  } finally {
    await deleteNetnsWithPrefix(prefix);
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * When an agent that carried traffic has given back what the traffic grew: the idle trimmer
 * (agent/idle-memory.ts) looks every 30 s and releases at the first look that finds no packet
 * moved since the one before, at most 60 s after the traffic.
 */
const IDLE_RELEASE_SECONDS = 90;

async function labRows(lab: Awaited<ReturnType<typeof labUp>>): Promise<number[]> {
  const rows: number[] = [];
  for (const node of lab.nodes) {
    const pid = lab.agentProcess(node.name)?.pid;
    if (pid === undefined) throw new Error(`no agent on ${node.name}`);
    const rss = (await rssKiB(pid)) / 1024;
    const { anonymous } = await smapsKiB(pid);
    rows.push(rss);
    console.log(
      `  ${node.name.padEnd(9)} RSS ${rss.toFixed(1)} MiB (${against(rss, TARGET_RSS_MB)}); anonymous ${(anonymous / 1024).toFixed(1)} MiB; ` +
        `code run: ${await codeRun(node.logPath)}`,
    );
  }
  const sorted = [...rows].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  console.log(
    `  median ${median.toFixed(1)} MiB (${against(median, TARGET_RSS_MB)}), range ${sorted[0]!.toFixed(1)}–${sorted.at(-1)!.toFixed(1)}`,
  );
  return rows;
}

/**
 * Every agent of the default lab after the matrix: `settleSeconds` after it (the agents have
 * not yet given back what the traffic grew), and once the idle trimmer has (an idle agent).
 * One start: the agents run from their bundle, so a first start is like any other.
 */
async function defaultLab(settleSeconds: number): Promise<void> {
  const lab = await labUp();
  try {
    const matrix = await runMatrix(lab);
    const done = Date.now();
    const reachable = `${matrix.entries.filter((e) => e.ok).length}/${matrix.entries.length} pairs reachable`;
    await new Promise((r) => setTimeout(r, settleSeconds * 1000));
    console.log(`default lab, ${settleSeconds} s after the matrix (${reachable}):`);
    await labRows(lab);
    const idle = Math.max(IDLE_RELEASE_SECONDS, settleSeconds);
    console.log(`  (waiting for the agents' idle release: ${idle} s after the matrix)`);
    await new Promise((r) => setTimeout(r, Math.max(0, done + idle * 1000 - Date.now())));
    console.log(`default lab, ${idle} s after the matrix (idle: the agents' idle release done):`);
    await labRows(lab);
  } finally {
    await lab.down();
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]));
else {
  const { values } = parseArgs({
    options: {
      'settle-seconds': { type: 'string', default: '20' },
      nodes: { type: 'string', default: '5000' },
      'no-lab': { type: 'boolean', default: false },
    },
  });
  await outer(Number(values['settle-seconds']), Number(values.nodes));
  if (!values['no-lab']) await defaultLab(Number(values['settle-seconds']));
}
