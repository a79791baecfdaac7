// Measures the API test server as the lab runs it (a separate process), from client-node:
//   node lab/kube-apiserver/measure.ts [--nodes 1000] [--watchers 50] [--patches 200]
// Prints one JSON object: create latency p50/p99 (sequential), creates/s with 50 in flight,
// and watch fan-out latency (patch acknowledged → every watcher has the event) p50/p99.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, Watch } from '@kubernetes/client-node';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    watchers: { type: 'string', default: '50' },
    patches: { type: 'string', default: '200' },
  },
});
const NODES = Number(values.nodes);
const WATCHERS = Number(values.watchers);
const PATCHES = Number(values.patches);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function summary(ms: number[]): { p50: number; p99: number } {
  const s = [...ms].sort((a, b) => a - b);
  return { p50: Number(percentile(s, 50).toFixed(2)), p99: Number(percentile(s, 99).toFixed(2)) };
}

const dir = await mkdtemp(join(tmpdir(), 'kas-measure-'));
const kubeconfig = join(dir, 'kubeconfig');
const child = spawn(
  process.execPath,
  [join(import.meta.dirname, 'main.ts'), '--listen', '127.0.0.1:0', '--kubeconfig-out', kubeconfig],
  { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, EDGEMESH_LOG_LEVEL: 'warn' } },
);
const aborts: AbortController[] = [];
try {
  await new Promise<void>((resolve, reject) => {
    createInterface(child.stdout!).once('line', () => resolve());
    child.once('exit', (code) => reject(new Error(`the server exited with ${code}`)));
  });
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);

  const sequential: number[] = [];
  for (let i = 0; i < NODES; i++) {
    const t0 = performance.now();
    await core.createNode({ body: { metadata: { name: `seq-${i}` } } });
    sequential.push(performance.now() - t0);
  }

  const concurrentTotal = NODES;
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < concurrentTotal) {
        const i = next++;
        await core.createNode({ body: { metadata: { name: `conc-${i}` } } });
      }
    }),
  );
  const createsPerSecond = concurrentTotal / ((performance.now() - t0) / 1000);

  const watch = new Watch(kc);
  const seen = new Map<string, number>();
  const rv = (await core.listNode({ limit: 1 })).metadata!.resourceVersion!;
  for (let w = 0; w < WATCHERS; w++) {
    aborts.push(
      await watch.watch(
        '/api/v1/nodes',
        { resourceVersion: rv, fieldSelector: 'metadata.name=seq-0' },
        (_type, obj: { metadata: { resourceVersion: string } }) => {
          seen.set(obj.metadata.resourceVersion, (seen.get(obj.metadata.resourceVersion) ?? 0) + 1);
        },
        () => {},
      ),
    );
  }
  const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  const fanout: number[] = [];
  for (let i = 0; i < PATCHES; i++) {
    const start = performance.now();
    const patched = await core.patchNode({ name: 'seq-0', body: { metadata: { labels: { i: String(i) } } } }, merge);
    const version = patched.metadata!.resourceVersion!;
    while ((seen.get(version) ?? 0) < WATCHERS) await new Promise((r) => setImmediate(r));
    fanout.push(performance.now() - start);
  }
  process.stdout.write(
    `${JSON.stringify({
      createSequentialMs: summary(sequential),
      createsPerSecondWith50InFlight: Math.round(createsPerSecond),
      objects: 2 * NODES,
      watchers: WATCHERS,
      patchToAllWatchersMs: summary(fanout),
    })}\n`,
  );
} finally {
  for (const a of aborts) a.abort();
  child.kill('SIGTERM');
  await rm(dir, { recursive: true, force: true });
}
