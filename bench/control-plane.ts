// Control-plane benchmark: with 1,000 and 5,000 emulated peers (Node objects carrying
// edgemesh annotations in the API test server), how long until every peer is in the
// forwarder's LPM table after start (initial list), how long a newly created Node takes
// to be programmed (watch → directory → LPM), and the resident memory of the process
// holding the agent's Node informer (agent/kube.ts) + directory + route table. The Nodes
// look like kubelet-registered ones (addresses, conditions, nodeInfo, capacity, an image
// list, managedFields: about 9 KB each), not only the annotations edgemesh reads, because
// every agent caches every Node. No namespaces needed.
//   node bench/control-plane.ts [--sizes 1000,5000]
// The measured process runs as the agent does from its second start: with the agent's V8
// flags and malloc settings (bin/agent-runtime.js) and a filled compile cache
// (bin/edgemesh-cni.js); RSS counts the Node binary's resident pages like `ps` does.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import type { V1Node } from '@kubernetes/client-node';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { NodeApi } from '../agent/kube.ts';
import { releaseStartupMemory } from '../agent/startup-memory.ts';
import { AGENT_V8_FLAGS, missingAgentEnv } from '../bin/agent-runtime.js';
import { KubeClient, KubeConfig } from '../common/kube/client.ts';
import { Forwarder } from '../dataplane/forwarder.ts';
import type { Packet, PacketIO } from '../dataplane/types.ts';
import { PeerDirectory, peerAnnotations } from '../overlay/directory.ts';
import { percentile } from './lib/stats.ts';

const root = new URL('..', import.meta.url).pathname;

/** Issue #16: what one agent may hold and how fast it programs a new Node in a 5,000-node cluster. */
const TARGET = { peers: 5000, rssMB: 150, p50Ms: 10 };

/** A device that never reads or writes: the control plane does not touch packets. */
const idleDevice: PacketIO = {
  offload: true,
  onBatch(_handler: (batch: Packet[]) => void) {},
  write: (batch: Packet[]) => batch.length,
};

async function startApiServerProcess(): Promise<{ url: string; stop(): Promise<void> }> {
  const child = spawn(
    process.execPath,
    [`${root}lab/kube-apiserver/main.ts`, '--listen', '127.0.0.1:0', '--history-limit', '20000'],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { ...process.env, EDGEMESH_LOG_LEVEL: 'warn' },
    },
  );
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const { url } = JSON.parse(line) as { url: string };
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

async function peerNode(i: number): Promise<V1Node> {
  const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString();
  // Peer i owns 10.(i/256).(i%256).0/24 inside 10.0.0.0/8, so every block is distinct.
  const cidr = `10.${Math.floor(i / 256) % 256}.${i % 256}.0/24`;
  const ip = `192.168.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`;
  const name = `peer-${i}`;
  const now = '2026-11-30T12:00:00Z';
  return {
    metadata: {
      name,
      labels: {
        'edgemesh.io/site': `site-${i % 50}`,
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'node.kubernetes.io/instance-type': 'edge-small',
      },
      annotations: {
        ...peerAnnotations({
          peerId,
          multiaddrs: [`/ip4/${ip}/tcp/4001`],
          podCidrs: [cidr],
          site: `site-${i % 50}`,
          nodeIp: ip,
          punchPort: 4002,
        }),
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
      managedFields: ['kubelet', 'kube-controller-manager', 'edgemesh'].map((manager) => ({
        manager,
        operation: 'Update',
        apiVersion: 'v1',
        time: new Date(now),
        fieldsType: 'FieldsV1',
        fieldsV1: {
          'f:metadata': { 'f:annotations': { '.': {}, 'f:node.alpha.kubernetes.io/ttl': {} }, 'f:labels': { '.': {} } },
          'f:status': {
            'f:conditions': { 'k:{"type":"Ready"}': { '.': {}, 'f:lastHeartbeatTime': {}, 'f:status': {} } },
          },
        },
      })),
    },
    status: {
      addresses: [
        { type: 'InternalIP', address: ip },
        { type: 'Hostname', address: name },
      ],
      capacity: { cpu: '4', memory: '8025072Ki', pods: '110', 'ephemeral-storage': '61202244Ki' },
      allocatable: { cpu: '4', memory: '7922672Ki', pods: '110', 'ephemeral-storage': '56403987978' },
      conditions: ['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready'].map((type) => ({
        type,
        status: type === 'Ready' ? 'True' : 'False',
        lastHeartbeatTime: new Date(now),
        lastTransitionTime: new Date(now),
        reason: type === 'Ready' ? 'KubeletReady' : `KubeletHasNo${type}`,
        message: type === 'Ready' ? 'kubelet is posting ready status' : `kubelet has no ${type}`,
      })),
      nodeInfo: {
        architecture: 'amd64',
        bootID: `b00t-${i}`,
        containerRuntimeVersion: 'containerd://1.7.24',
        kernelVersion: '6.1.0-28-amd64',
        kubeProxyVersion: 'v1.32.0',
        kubeletVersion: 'v1.32.0',
        machineID: `m${i}`,
        operatingSystem: 'linux',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        systemUUID: `uuid-${i}`,
      },
      // A small edge node's image cache: its digests dominate a real Node's size.
      images: Array.from({ length: 24 }, (_, k) => ({
        names: [
          `registry.example.com/team/app-${k}@sha256:${createHash('sha256').update(`${i}/${k}`).digest('hex')}`,
          `registry.example.com/team/app-${k}:v1.${k}.0`,
        ],
        sizeBytes: 10_000_000 + k * 1_000_003,
      })),
    },
  };
}

async function createNodes(api: KubeClient, from: number, to: number): Promise<void> {
  const queue = Array.from({ length: to - from }, (_, k) => from + k);
  const worker = async () => {
    for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
      await api.request('POST', '/api/v1/nodes', { body: await peerNode(i) });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

export interface ControlPlaneResult {
  peers: number;
  initialSyncMs: number;
  newNodeP50Ms: number;
  newNodeP99Ms: number;
  rssMB: number;
  heapMB: number;
}

function kubeConfigFor(url: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'bench', server: url, skipTLSVerify: true }],
    users: [{ name: 'bench' }],
    contexts: [{ name: 'bench', cluster: 'bench', user: 'bench' }],
    currentContext: 'bench',
  });
  return kc;
}

/** The measured side, in a fresh process so its RSS is its own: informer → directory → LPM. */
async function watchSide(url: string, size: number): Promise<ControlPlaneResult> {
  const kc = kubeConfigFor(url);
  const api = new KubeClient(kc);
  const directory = new PeerDirectory();
  const forwarder = new Forwarder({ tun: idleDevice, localCidrs: ['10.255.255.0/24'] });
  const programmed = new Map<string, number>();
  directory.on('peer:added', (p) => {
    forwarder.setPeer(p.node, p.podCidrs);
    programmed.set(p.node, performance.now());
  });
  const toNodeLike = (n: V1Node) => ({
    name: n.metadata?.name ?? '',
    labels: n.metadata?.labels ?? {},
    annotations: n.metadata?.annotations ?? {},
  });
  const informer = new NodeApi(kc).nodeInformer();
  informer.on('add', (n) => directory.upsertFromNode(toNodeLike(n)));
  informer.on('update', (n) => directory.upsertFromNode(toNodeLike(n)));
  informer.on('delete', (n) => directory.remove(n.metadata?.name ?? ''));

  const start = performance.now();
  await informer.start();
  while (programmed.size < size) await new Promise((r) => setTimeout(r, 1));
  const initialSyncMs = performance.now() - start;

  const latencies: number[] = [];
  for (let k = 0; k < 50; k++) {
    const node = await peerNode(size + k);
    const name = node.metadata!.name!;
    const t0 = performance.now();
    await api.request('POST', '/api/v1/nodes', { body: node });
    while (!programmed.has(name)) await new Promise((r) => setImmediate(r));
    latencies.push(programmed.get(name)! - t0);
  }
  await informer.stop();
  // What the process holds, as the agent does after start-up (agent/startup-memory.ts),
  // not the garbage the initial list left behind.
  releaseStartupMemory();
  const mem = process.memoryUsage();
  return {
    peers: size,
    initialSyncMs,
    newNodeP50Ms: percentile(latencies, 50),
    newNodeP99Ms: percentile(latencies, 99),
    rssMB: mem.rss / 2 ** 20,
    heapMB: mem.heapUsed / 2 ** 20,
  };
}

/** The measured side's process, started as the entry shim starts the agent. */
function agentLikeProcess(args: string[]): { argv: string[]; env: NodeJS.ProcessEnv } {
  return {
    argv: [...AGENT_V8_FLAGS, new URL(import.meta.url).pathname, ...args],
    env: { ...process.env, ...missingAgentEnv(process.env) },
  };
}

/**
 * Runs the measured side as the agent runs: with a compile cache that a first start has
 * filled (bin/edgemesh-cni.js), so the process never loads Node's type stripper.
 */
async function warmCompileCache(dir: string): Promise<void> {
  const warm = agentLikeProcess(['--warm-up']);
  const child = spawn(process.execPath, warm.argv, {
    stdio: 'inherit',
    env: { ...warm.env, NODE_COMPILE_CACHE: dir },
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`compile cache warm-up failed (exit ${code})`);
}

async function measureSize(size: number, compileCache: string): Promise<ControlPlaneResult> {
  const server = await startApiServerProcess();
  try {
    await createNodes(new KubeClient(kubeConfigFor(server.url)), 0, size);
    const side = agentLikeProcess(['--watch-side', server.url, String(size)]);
    const child = spawn(process.execPath, side.argv, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...side.env, NODE_COMPILE_CACHE: compileCache },
    });
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    await once(child, 'exit');
    return JSON.parse(line) as ControlPlaneResult;
  } finally {
    await server.stop();
  }
}

if (import.meta.main && process.argv[2] === '--warm-up') {
  // Importing this module compiled everything the measured side loads: the exit saves it.
} else if (import.meta.main && process.argv[2] === '--watch-side') {
  console.log(JSON.stringify(await watchSide(process.argv[3]!, Number(process.argv[4]))));
} else if (import.meta.main) {
  const arg = process.argv.indexOf('--sizes');
  const sizes = (arg > 0 ? process.argv[arg + 1]! : '1000,5000').split(',').map(Number);
  console.log('control plane: Node objects → informer → peer directory → LPM (API test server on loopback)');
  console.log(
    `targets at ${TARGET.peers} peers: RSS ≤ ${TARGET.rssMB} MB, new node → LPM p50 < ${TARGET.p50Ms} ms (issue #16)`,
  );
  console.log('peers | initial sync ms | new node → LPM p50 ms | p99 ms | process RSS MB | heap MB | target');
  const compileCache = await mkdtemp(join(tmpdir(), 'control-plane-compile-cache-'));
  try {
    await warmCompileCache(compileCache);
    for (const size of sizes) {
      const r = await measureSize(size, compileCache);
      const verdict =
        size !== TARGET.peers
          ? ''
          : `RSS ${r.rssMB <= TARGET.rssMB ? 'met' : 'MISSED'}, p50 ${r.newNodeP50Ms < TARGET.p50Ms ? 'met' : 'MISSED'}`;
      console.log(
        `${r.peers} | ${r.initialSyncMs.toFixed(0)} | ${r.newNodeP50Ms.toFixed(2)} | ${r.newNodeP99Ms.toFixed(2)} | ${r.rssMB.toFixed(0)} | ${r.heapMB.toFixed(0)} | ${verdict}`,
      );
    }
  } finally {
    await rm(compileCache, { recursive: true, force: true });
  }
}
