// CNI benchmark: ADD and DEL latency, p50/p99, for 100 sequential and 20 concurrent pods,
// edgemesh as deployed (the agent, `edgemesh-cni agent --config`, with its API server, IPAM
// block, TUN and libp2p host, called through the C client it installed in its CNI bin dir)
// side by side with the reference `bridge` + `host-local` plugins from /usr/lib/cni, run by
// the same driver in the same run, on the same pod namespaces (edgemesh on eth0, reference on
// eth1 of each pod, calls interleaved so both see the same machine load). Prints the ratio
// (aim: ≤ 0.5) and the time spent inside the agent (from its own metrics).
//   node bench/cni.ts        (root; needs `npm run build:native`; everything lives in
//                             namespaces and a directory it creates and removes)
// The driver runs inside a "node" namespace (re-executed via `ip netns exec`), so both
// plugins are spawned the same way and every bridge/veth/rule dies with that namespace.
import { spawn } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execPlugin } from '../cni/exec-plugin.ts';
import { run } from '../common/exec.ts';
import { createNetns, deleteNetnsWithPrefix, runPrefix } from '../common/netns.ts';
import { histogramTotals, metricValue, startAgentNode } from './lib/agent-node.ts';
import { percentile, ratio } from './lib/stats.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SEQUENTIAL = 100;
const CONCURRENT = 20;
/** Concurrent bursts per plugin, alternating which plugin goes first (the machine's load drifts). */
const CONCURRENT_ROUNDS = 3;
const REFERENCE = '/usr/lib/cni';
/** The node's own address, on an interface inside the node namespace. */
const NODE_IP = '192.168.77.11';

interface Invocation {
  code: number;
  stdout: string;
  ms: number;
}

async function invoke(file: string, env: Record<string, string>, stdin: string): Promise<Invocation> {
  const started = performance.now();
  const { code, stdout, stderr } = await execPlugin(file, env, stdin);
  const ms = performance.now() - started;
  if (code !== 0) throw new Error(`${file} ${env.CNI_COMMAND} failed (${code}): ${stdout}${stderr}`);
  return { code, stdout, ms };
}

interface Plugin {
  label: string;
  file: string;
  ifname: string;
  conf: string;
}

function env(command: string, containerId: string, netns: string, ifname: string): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netns,
    CNI_IFNAME: ifname,
    CNI_PATH: REFERENCE,
  };
}

type Samples = Record<string, { add: number[]; del: number[] }>;

async function sequential(plugins: Plugin[], pods: string[], samples: Samples): Promise<void> {
  for (const [i, netns] of pods.entries()) {
    for (const p of plugins) {
      samples[p.label]!.add.push((await invoke(p.file, env('ADD', `seq${i}`, netns, p.ifname), p.conf)).ms);
    }
  }
  for (const [i, netns] of pods.entries()) {
    for (const p of plugins) {
      samples[p.label]!.del.push((await invoke(p.file, env('DEL', `seq${i}`, netns, p.ifname), p.conf)).ms);
    }
  }
}

async function concurrent(plugins: Plugin[], pods: string[], samples: Samples): Promise<void> {
  for (const p of plugins) {
    const adds = await Promise.all(
      pods.map((netns, i) => invoke(p.file, env('ADD', `con${i}`, netns, p.ifname), p.conf)),
    );
    samples[p.label]!.add.push(...adds.map((r) => r.ms));
    const dels = await Promise.all(
      pods.map((netns, i) => invoke(p.file, env('DEL', `con${i}`, netns, p.ifname), p.conf)),
    );
    samples[p.label]!.del.push(...dels.map((r) => r.ms));
  }
}

function row(label: string, s: { add: number[]; del: number[] }): string {
  const f = (v: number) => v.toFixed(1).padStart(8);
  return `  ${label.padEnd(22)}${f(percentile(s.add, 50))}${f(percentile(s.add, 99))}${f(percentile(s.del, 50))}${f(percentile(s.del, 99))}`;
}

function report(title: string, samples: Samples, ours: string, ref: string): void {
  console.log(`${title}  (ms)              ADD p50  ADD p99  DEL p50  DEL p99`);
  for (const [label, s] of Object.entries(samples)) console.log(row(label, s));
  const o = samples[ours]!;
  const r = samples[ref]!;
  console.log(
    `  ratio edgemesh/reference: ADD p50 ${ratio(percentile(o.add, 50), percentile(r.add, 50))}, ` +
      `DEL p50 ${ratio(percentile(o.del, 50), percentile(r.del, 50))}  (aim ≤ 0.5)`,
  );
}

/** Runs inside the node namespace: starts the agent as deployed, drives both plugins. */
async function inner(dir: string, pods: string[]): Promise<void> {
  const node = await startAgentNode({
    dir: join(dir, 'node'),
    name: 'bench-node',
    nodeIp: NODE_IP,
    clusterCidr: '10.244.0.0/16',
  });
  try {
    const ours: Plugin = {
      label: 'edgemesh (agent)',
      file: node.client,
      ifname: 'eth0',
      conf: node.pluginConf,
    };
    const ref: Plugin = {
      label: 'bridge + host-local',
      file: join(REFERENCE, 'bridge'),
      ifname: 'eth1',
      conf: JSON.stringify({
        cniVersion: '1.0.0',
        name: 'reference',
        type: 'bridge',
        bridge: 'ref-br0',
        isGateway: true,
        ipMasq: false,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/22' }]], dataDir: join(dir, 'host-local') },
      }),
    };
    const plugins = [ours, ref];
    // Warm-up (page cache, first bridge creation, the helper's first start) outside the measurement.
    for (const p of plugins) {
      await invoke(p.file, env('ADD', 'warm', pods[0]!, p.ifname), p.conf);
      await invoke(p.file, env('DEL', 'warm', pods[0]!, p.ifname), p.conf);
    }
    const before = await node.metrics();
    const seq: Samples = { [ours.label]: { add: [], del: [] }, [ref.label]: { add: [], del: [] } };
    await sequential(plugins, pods.slice(0, SEQUENTIAL), seq);
    const con: Samples = { [ours.label]: { add: [], del: [] }, [ref.label]: { add: [], del: [] } };
    for (let round = 0; round < CONCURRENT_ROUNDS; round++) {
      await concurrent(round % 2 === 0 ? plugins : [...plugins].reverse(), pods.slice(0, CONCURRENT), con);
    }
    const after = await node.metrics();

    const versions: number[] = [];
    for (let i = 0; i < 50; i++)
      versions.push((await invoke(ours.file, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}')).ms);

    console.log(
      'CNI ADD/DEL latency of the product as deployed: `edgemesh-cni agent` (API server, IPAM block, TUN, ' +
        'libp2p, netlink helper) in a node namespace, called through the C client it installed in its CNI bin dir',
    );
    console.log(
      `load average ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} (2-core machine shared)`,
    );
    report(`${SEQUENTIAL} sequential pods`, seq, ours.label, ref.label);
    report(`${CONCURRENT} concurrent pods ×${CONCURRENT_ROUNDS}`, con, ours.label, ref.label);
    const inAgent = (op: string) => {
      const metric = 'edgemesh_cni_operation_duration_seconds';
      const a = histogramTotals(before, metric, { operation: op });
      const b = histogramTotals(after, metric, { operation: op });
      return ((b.sum - a.sum) / (b.count - a.count)) * 1000;
    };
    console.log(
      `edgemesh time inside the agent (plugin.handle, from its metrics), mean: ADD ${inAgent('ADD').toFixed(1)} ms, ` +
        `DEL ${inAgent('DEL').toFixed(1)} ms (the rest of the client figure is process start of the client + socket round trip)`,
    );
    const fallbackMetric = 'edgemesh_cni_iproute2_fallbacks_total';
    const fallbacks = metricValue(after, fallbackMetric) - metricValue(before, fallbackMetric);
    console.log(`netlink helper: ${fallbacks} operations fell back to ip/nsenter during the run`);
    console.log(`C client alone (VERSION, answered locally, no agent): p50 ${percentile(versions, 50).toFixed(2)} ms`);
  } finally {
    await node.stop();
  }
}

async function outer(): Promise<void> {
  const prefix = runPrefix('cb');
  const node = `${prefix}node`;
  for (const built of ['edgemesh', 'edgemesh_tun.node']) {
    await access(join(ROOT, 'build', built)).catch(() => {
      throw new Error(`build/${built} is missing: the agent ships it; run \`npm run build:native\` first`);
    });
  }
  const dir = await mkdtemp(join(tmpdir(), `${prefix}cni-bench-`));
  try {
    await createNetns(node);
    // No dummy driver on every kernel: a veth pair whose peer stays in the same namespace.
    await run('ip', ['-n', node, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0-peer']);
    await run('ip', ['-n', node, 'link', 'set', 'eth0-peer', 'up']);
    await run('ip', ['-n', node, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', node, 'link', 'set', 'eth0', 'up']);
    const pods: string[] = [];
    for (let i = 0; i < SEQUENTIAL; i++) {
      await createNetns(`${prefix}p${i}`);
      pods.push(`/var/run/netns/${prefix}p${i}`);
    }
    const child = spawn(
      'ip',
      ['netns', 'exec', node, process.execPath, fileURLToPath(import.meta.url), '--inner', dir, JSON.stringify(pods)],
      { stdio: 'inherit' },
    );
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    if (code !== 0) throw new Error(`benchmark driver failed (exit ${code})`);
  } finally {
    await deleteNetnsWithPrefix(prefix);
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3]!, JSON.parse(process.argv[4]!) as string[]);
else await outer();
