// Idle memory of one agent as deployed: `edgemesh-cni agent` on a node namespace with the
// Kubernetes API test server, its block claimed, its TUN and libp2p host up, no traffic.
// Reports RSS and the V8 heap (from the agent's own metrics) after it has settled.
//   node bench/agent-memory.ts [--settle-seconds 20]      (root)
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '../common/exec.ts';
import { createNetns, deleteNetnsWithPrefix, runPrefix } from '../common/netns.ts';
import { metricValue, startAgentNode } from './lib/agent-node.ts';

const NODE_IP = '192.168.77.11';
const MiB = 1024 * 1024;

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN);
}

async function inner(dir: string, settleSeconds: number): Promise<void> {
  const node = await startAgentNode({ dir, name: 'mem-node', nodeIp: NODE_IP, clusterCidr: '10.244.0.0/16' });
  try {
    await new Promise((r) => setTimeout(r, settleSeconds * 1000));
    const metrics = await node.metrics();
    const m = (name: string) => metricValue(metrics, `edgemesh_${name}`) / MiB;
    const rss = (await rssKiB(node.agentPid)) / 1024;
    console.log(`idle agent after ${settleSeconds} s (one node, no peers, no traffic):`);
    console.log(`  RSS ${rss.toFixed(1)} MiB`);
    console.log(
      `  V8 heap: total ${m('nodejs_heap_size_total_bytes').toFixed(1)} MiB, used ${m('nodejs_heap_size_used_bytes').toFixed(1)} MiB, ` +
        `external ${m('nodejs_external_memory_bytes').toFixed(1)} MiB`,
    );
    for (const line of metrics.split('\n')) {
      const space = /^edgemesh_nodejs_heap_space_size_(total|used)_bytes\{space="(\w+)"\} (\S+)$/.exec(line);
      if (space && Number(space[3]) > MiB)
        console.log(`    ${space[2]} ${space[1]} ${(Number(space[3]) / MiB).toFixed(1)} MiB`);
    }
  } finally {
    await node.stop();
  }
}

async function outer(settleSeconds: number): Promise<void> {
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
      ['netns', 'exec', netns, process.execPath, fileURLToPath(import.meta.url), '--inner', dir, String(settleSeconds)],
      { stdio: 'inherit' },
    );
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    if (code !== 0) throw new Error(`measurement failed (exit ${code})`);
  } finally {
    await deleteNetnsWithPrefix(prefix);
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--inner') await inner(process.argv[3]!, Number(process.argv[4]));
else {
  const { values } = parseArgs({ options: { 'settle-seconds': { type: 'string', default: '20' } } });
  await outer(Number(values['settle-seconds']));
}
