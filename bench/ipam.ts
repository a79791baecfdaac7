// IPAM benchmark:
//  1. persistence strategies for the lease table (why ipam/ uses a journal);
//  2. LeaseStore allocate+release latency, sequential and 20 concurrent callers;
//  3. node block claim latency against the API test server with 1,000 blocks already taken.
// Run: node bench/ipam.ts   (prints figures; files go to a temp dir that is removed)
import { mkdtemp, open, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { formatCidr, gateway, nthBlock } from '../ipam/cidr.ts';
import { writeFileAtomic } from '../ipam/lease-journal.ts';
import { LeaseStore } from '../ipam/lease-store.ts';
import { blockObjectName, claimNodeBlocks, IPAM_GROUP, IPAM_PLURAL, IPAM_VERSION } from '../ipam/node-blocks.ts';
import type { NodeBlock } from '../ipam/types.ts';
import { startApiServer } from '../lab/kube-apiserver/server.ts';

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
}

function fmt(samples: number[]): string {
  return `p50 ${percentile(samples, 0.5).toFixed(3)} ms  p99 ${percentile(samples, 0.99).toFixed(3)} ms  (n=${samples.length})`;
}

async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

async function persistenceStrategies(dir: string): Promise<void> {
  const leases = Array.from({ length: 250 }, (_, i) => ({
    containerId: `${'c'.repeat(64)}${i}`,
    ifname: 'eth0',
    ips: [{ family: 4, address: `10.244.3.${i}`, prefixLength: 24, gateway: '10.244.3.1' }],
  }));
  const atomic: number[] = [];
  for (let i = 0; i < 200; i++) {
    atomic.push(await timed(() => writeFileAtomic(dir, 'snapshot.json', JSON.stringify({ leases }))));
  }
  const journal: number[] = [];
  const fh = await open(join(dir, 'journal'), 'a');
  try {
    for (let i = 0; i < 200; i++) {
      journal.push(
        await timed(async () => {
          await fh.write(`${JSON.stringify(leases[i % leases.length])}\n`);
          await fh.datasync();
        }),
      );
    }
  } finally {
    await fh.close();
  }
  // rename without the directory fsync, to show where the snapshot's tail comes from
  const noDirSync: number[] = [];
  for (let i = 0; i < 200; i++) {
    noDirSync.push(
      await timed(async () => {
        const t = await open(join(dir, 's.tmp'), 'w');
        await t.writeFile(JSON.stringify({ leases }));
        await t.sync();
        await t.close();
        await rename(join(dir, 's.tmp'), join(dir, 's.json'));
      }),
    );
  }
  console.log('persistence of one mutation (250-lease table):');
  console.log(`  atomic snapshot write+fsync+rename+fsync(dir): ${fmt(atomic)}`);
  console.log(`  atomic snapshot without the dir fsync:          ${fmt(noDirSync)}`);
  console.log(`  journal append + fdatasync:                     ${fmt(journal)}`);
}

const BLOCKS: NodeBlock[] = ['10.250.0.0/20', 'fd00:10:250::/80'].map((cidr) => ({
  family: cidr.includes(':') ? 6 : 4,
  cidr,
  gateway: gateway(cidr),
}));

async function leaseLatency(dir: string): Promise<void> {
  const store = await LeaseStore.open({ dir: join(dir, 'leases'), blocks: BLOCKS });
  try {
    const sequential: number[] = [];
    for (let i = 0; i < 1000; i++) {
      sequential.push(
        await timed(async () => {
          await store.allocate(`seq-${i}`, 'eth0');
          await store.release(`seq-${i}`, 'eth0');
        }),
      );
    }
    const concurrent: number[] = [];
    const started = performance.now();
    await Promise.all(
      Array.from({ length: 20 }, async (_, w) => {
        for (let i = 0; i < 100; i++) {
          concurrent.push(
            await timed(async () => {
              await store.allocate(`conc-${w}-${i}`, 'eth0');
              await store.release(`conc-${w}-${i}`, 'eth0');
            }),
          );
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    console.log('LeaseStore allocate+release (dual-stack, fdatasync per batch):');
    console.log(`  sequential:    ${fmt(sequential)}`);
    console.log(`  20 concurrent: ${fmt(concurrent)}  → ${(concurrent.length / seconds).toFixed(0)} pairs/s`);
  } finally {
    await store.close();
  }
}

async function claimLatency(dir: string): Promise<void> {
  const server = await startApiServer({ host: '127.0.0.1', port: 0 });
  try {
    const path = join(dir, 'kubeconfig');
    await server.writeKubeconfig(path, 'bench');
    const kc = new KubeConfig();
    kc.loadFromFile(path);
    const core = kc.makeApiClient(CoreV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const crd = parse(await readFile(join(import.meta.dirname, '../deploy/crds/ipamblock.yaml'), 'utf8'));
    await kc.makeApiClient(ApiextensionsV1Api).createCustomResourceDefinition({ body: crd });
    const holder = await core.createNode({ body: { metadata: { name: 'holder' } } });
    // 1,000 of the 1,024 /24 blocks of 10.0.0.0/14 taken: nearly every hash start is taken.
    const cluster = '10.0.0.0/14';
    const TAKEN = 1000;
    let next = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (next < TAKEN) {
          const cidr = formatCidr(nthBlock(cluster, 24, next++));
          await custom.createClusterCustomObject({
            group: IPAM_GROUP,
            version: IPAM_VERSION,
            plural: IPAM_PLURAL,
            body: {
              apiVersion: `${IPAM_GROUP}/${IPAM_VERSION}`,
              kind: 'IPAMBlock',
              metadata: {
                name: blockObjectName(cidr),
                ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'holder', uid: holder.metadata?.uid }],
              },
              spec: { cidr, node: 'holder', family: 4 },
            },
          });
        }
      }),
    );
    const claims: number[] = [];
    for (let i = 0; i < 20; i++) {
      const nodeName = `bench-${i}`;
      await core.createNode({ body: { metadata: { name: nodeName } } });
      const agent = new KubeConfig();
      agent.loadFromFile(path);
      claims.push(await timed(() => claimNodeBlocks({ kubeconfig: agent, nodeName, clusterCidrs: [cluster] })));
    }
    console.log(`node block claim, ${TAKEN} of 1024 blocks taken (read node + list nodes/blocks + create):`);
    console.log(`  ${fmt(claims)}`);
  } finally {
    await server.close();
  }
}

const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-ipam-'));
try {
  await persistenceStrategies(dir);
  await leaseLatency(dir);
  await claimLatency(dir);
} finally {
  await rm(dir, { recursive: true, force: true });
}
