// Control-plane benchmark: with 1,000 and 5,000 emulated peers (Node objects carrying
// edgemesh annotations in the API test server), how long until every peer is in the
// forwarder's LPM table after start (initial list), how long a newly created Node takes
// to be programmed (watch → peer table → route verifier → LPM), and the resident memory of
// the process running the agent's own control-plane path, built as agent/agent.ts builds
// it: BlockWatch (IPAMBlocks; this node's own block is the only one) and NodeWatch feeding
// the PodCidrAuthority, NodeWatch feeding the peer table (overlay/directory.ts), the
// PeerRouteVerifier (authority and overlap checks, this node's block as its own) deciding
// the routes, and routeForwarder programming a Forwarder on an idle device. Only what
// needs the host is left out (TUN, overlay, host routes, CNI). The Nodes look like
// kubelet-registered ones with the node IPAM controller (spec.podCIDRs equal to the CIDR
// the annotation claims, addresses, conditions, nodeInfo, capacity, an image list,
// managedFields: about 9 KB each), not only the annotations edgemesh reads, because every
// agent caches every Node, and because the agent routes a CIDR only where the cluster
// assigned it. This node's own Node object is not created (the agent only checks its own
// annotations on it). Also printed, not a target: how long after a create the agent's event
// loop stays busy, since a new Node's spec.podCIDRs change the authority and the verifier
// then checks the peers whose claims overlap them again. No namespaces needed.
//   node bench/control-plane.ts [--sizes 1000,5000]
// The measured process runs as the agent does from its second start: with the agent's V8
// flags and malloc settings (bin/agent-runtime.js), its module loading and a filled cache
// of stripped sources (bin/agent-loader.js) and the DaemonSet's log level (info; its log goes to /dev/null);
// RSS counts the Node binary's resident pages like `ps` does.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { parse as parseYaml } from 'yaml';
import { BlockWatch } from '../agent/block-watch.ts';
import { routeForwarder } from '../agent/forwarder-routes.ts';
import { NodeApi } from '../agent/kube.ts';
import { NodeWatch } from '../agent/node-watch.ts';
import { PeerRouteVerifier } from '../agent/peer-routes.ts';
import { PodCidrAuthority } from '../agent/pod-cidr-authority.ts';
import { releaseStartupMemory } from '../agent/startup-memory.ts';
import { AGENT_V8_FLAGS, missingAgentEnv } from '../bin/agent-runtime.js';
import { KubeClient, KubeConfig } from '../common/kube/client.ts';
import { logger } from '../common/log.ts';
import { Forwarder } from '../dataplane/forwarder.ts';
import type { Packet, PacketIO } from '../dataplane/types.ts';
import {
  blockObjectName,
  IPAM_GROUP,
  IPAM_KIND,
  IPAM_PLURAL,
  IPAM_VERSION,
  type IpamBlockObject,
} from '../ipam/node-blocks.ts';
import { PeerDirectory } from '../overlay/directory.ts';
import { createNodes, peerNode } from './lib/peer-nodes.ts';
import { percentile } from './lib/stats.ts';

const root = new URL('..', import.meta.url).pathname;
const AGENT_LOADER = new URL('../bin/agent-loader.js', import.meta.url).href;

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

export interface ControlPlaneResult {
  peers: number;
  initialSyncMs: number;
  newNodeP50Ms: number;
  newNodeP99Ms: number;
  /** From the create until the agent's event loop is free again (its follow-on work done). */
  newNodeBusyP50Ms: number;
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

/** This node, whose agent is measured: its own block, as claimNodeBlocks leaves it in an IPAMBlock. */
const SELF = { name: 'bench-self', block: '10.255.255.0/24' };
/** The cluster as the agent's config gives it (every peer's /24 lies inside). */
const CLUSTER = { cidrs: ['10.0.0.0/8'], blockPrefixV4: 24 };

/** The IPAMBlock CRD (deploy/crds) and this node's block, which the agent's BlockWatch lists. */
async function createSelfBlock(api: KubeClient): Promise<void> {
  const crd = parseYaml(await readFile(`${root}deploy/crds/ipamblock.yaml`, 'utf8')) as object;
  await api.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', { body: crd });
  const block: IpamBlockObject = {
    apiVersion: `${IPAM_GROUP}/${IPAM_VERSION}`,
    kind: IPAM_KIND,
    metadata: { name: blockObjectName(SELF.block) },
    spec: { cidr: SELF.block, node: SELF.name, family: 4 },
  };
  await api.request('POST', `/apis/${IPAM_GROUP}/${IPAM_VERSION}/${IPAM_PLURAL}`, { body: block });
}

/**
 * The measured side, in a fresh process so its RSS is its own: the agent's own parts, built
 * and started as agent/agent.ts startSteps does (BlockWatch, then PeerRouteVerifier and
 * NodeWatch), with routeForwarder driving a Forwarder on an idle device.
 */
async function watchSide(url: string, size: number): Promise<ControlPlaneResult> {
  const kc = kubeConfigFor(url);
  const client = new KubeClient(kc);
  const api = new NodeApi(kc);
  const log = logger('agent', { node: SELF.name });
  const directory = new PeerDirectory();
  const forwarder = new Forwarder({ tun: idleDevice, localCidrs: [], logger: log.child({ component: 'forwarder' }) });
  const forwarderRoutes = routeForwarder(directory, forwarder, log.child({ component: 'forwarder' }));
  // The agent sets its blocks once claimNodeBlocks has them.
  forwarder.setLocalCidrs([SELF.block]);
  // Listening after routeForwarder: its peer:routes handler has run (setPeer returned, the
  // CIDR is in the forwarder's LPM) by the time this one stamps the clock.
  const programmed = new Map<string, number>();
  directory.on('peer:routes', (node, routes) => {
    if (routes.length > 0 && !programmed.has(node)) programmed.set(node, performance.now());
  });

  const start = performance.now();
  const authority = new PodCidrAuthority(CLUSTER.cidrs, { v4: CLUSTER.blockPrefixV4 });
  const blockWatch = new BlockWatch({ api, authority, logger: log.child({ component: 'block-watch' }) });
  await blockWatch.start();
  const peerRoutes = new PeerRouteVerifier({
    directory,
    authority,
    localCidrs: [SELF.block],
    logger: log.child({ component: 'peer-routes' }),
  });
  const watch = new NodeWatch({
    api,
    selfName: SELF.name,
    directory,
    authority,
    logger: log.child({ component: 'node-watch' }),
  });
  await watch.start();
  // Every Node was routed by the path itself, nothing refused or failed on the way, and the
  // authority knew this node's block from the BlockWatch: else the figures measure something else.
  const faults = () => ({
    nodeWatch: watch.handlerErrors,
    blockWatch: blockWatch.handlerErrors,
    peerRoutes: peerRoutes.handlerErrors,
    forwarder: forwarderRoutes.errors + forwarderRoutes.refusedByForwarder,
    refusedByTable: directory.refusals().size,
    refusedByForwarder: Object.keys(forwarder.stats().refusedCidrs).length,
    ownBlockUnknown: authority.assigned(SELF.name).includes(SELF.block) ? 0 : 1,
  });
  // A peer the path refuses is never programmed: give up rather than wait for it forever.
  const deadline = performance.now() + 10 * 60_000;
  const notLate = (what: string) => {
    if (performance.now() > deadline) throw new Error(`${what} never programmed: ${JSON.stringify(faults())}`);
  };
  while (programmed.size < size) {
    notLate(`${size - programmed.size} of ${size} peers`);
    await new Promise((r) => setTimeout(r, 1));
  }
  const initialSyncMs = performance.now() - start;

  const latencies: number[] = [];
  const busy: number[] = [];
  for (let k = 0; k < 50; k++) {
    const node = await peerNode(size + k);
    const name = node.metadata!.name!;
    const t0 = performance.now();
    await client.request('POST', '/api/v1/nodes', { body: node });
    while (!programmed.has(name)) {
      notLate(name);
      await new Promise((r) => setImmediate(r));
    }
    latencies.push(programmed.get(name)! - t0);
    // A new Node's spec.podCIDRs change the authority, which has the verifier check every
    // peer again in the next turn of the event loop (setImmediate): the next Node is created
    // once that pass is over, so it is timed on an agent that is idle, as a joining node finds it.
    await new Promise((r) => setImmediate(r));
    busy.push(performance.now() - t0);
  }
  await watch.stop();
  await blockWatch.stop();
  peerRoutes.stop();
  forwarderRoutes.stop();
  // What the process holds, as the agent does after start-up (agent/startup-memory.ts),
  // not the garbage the initial list left behind.
  await releaseStartupMemory();
  const mem = process.memoryUsage();
  const found = faults();
  if (Object.values(found).some((n) => n > 0)) throw new Error(`the measured path faulted: ${JSON.stringify(found)}`);
  return {
    peers: size,
    initialSyncMs,
    newNodeP50Ms: percentile(latencies, 50),
    newNodeP99Ms: percentile(latencies, 99),
    newNodeBusyP50Ms: percentile(busy, 50),
    rssMB: mem.rss / 2 ** 20,
    heapMB: mem.heapUsed / 2 ** 20,
  };
}

/**
 * The measured side's process, started as the entry shim starts the agent: its V8 flags,
 * malloc settings and module loading (bin/agent-loader.js), its stripped sources in `sourceCache`.
 */
function agentLikeProcess(args: string[], sourceCache: string): { argv: string[]; env: NodeJS.ProcessEnv } {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...missingAgentEnv(process.env),
    EDGEMESH_SOURCE_CACHE: sourceCache,
  };
  delete env.NODE_COMPILE_CACHE;
  return {
    argv: [...AGENT_V8_FLAGS, '--import', AGENT_LOADER, new URL(import.meta.url).pathname, ...args],
    env,
  };
}

/**
 * Runs the measured side as the agent runs from its second start on: with the stripped
 * sources a first start has saved (bin/stripped-sources.js), so the process never loads
 * Node's type stripper.
 */
async function warmSourceCache(dir: string): Promise<void> {
  const warm = agentLikeProcess(['--warm-up'], dir);
  const child = spawn(process.execPath, warm.argv, { stdio: 'inherit', env: warm.env });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`source cache warm-up failed (exit ${code})`);
}

async function measureSize(size: number, sourceCache: string): Promise<ControlPlaneResult> {
  const server = await startApiServerProcess();
  try {
    const api = new KubeClient(kubeConfigFor(server.url));
    await createSelfBlock(api);
    await createNodes(api, 0, size);
    const side = agentLikeProcess(['--watch-side', server.url, String(size)], sourceCache);
    // The measured side logs as the DaemonSet's agent does (info, JSON lines on stdout, here
    // into /dev/null); its result comes on fd 3.
    const child = spawn(process.execPath, side.argv, {
      stdio: ['ignore', 'ignore', 'inherit', 'pipe'],
      env: { ...side.env, EDGEMESH_LOG_LEVEL: 'info' },
    });
    const lines = createInterface({ input: child.stdio[3] as Readable });
    const exited = once(child, 'exit');
    const [line] = (await Promise.race([once(lines, 'line'), exited.then(() => [undefined])])) as [string | undefined];
    const [code] = (await exited) as [number | null];
    if (line === undefined) throw new Error(`the measured side exited (${code}) without a result`);
    return JSON.parse(line) as ControlPlaneResult;
  } finally {
    await server.stop();
  }
}

if (import.meta.main && process.argv[2] === '--warm-up') {
  // Importing this module stripped and saved every TypeScript module the measured side loads.
} else if (import.meta.main && process.argv[2] === '--watch-side') {
  writeSync(3, `${JSON.stringify(await watchSide(process.argv[3]!, Number(process.argv[4])))}\n`);
} else if (import.meta.main) {
  const arg = process.argv.indexOf('--sizes');
  const sizes = (arg > 0 ? process.argv[arg + 1]! : '1000,5000').split(',').map(Number);
  console.log(
    "control plane: the agent's own NodeWatch → peer table → route verifier → forwarder (API test server on loopback)",
  );
  console.log(
    `targets at ${TARGET.peers} peers: RSS ≤ ${TARGET.rssMB} MB, new node → LPM p50 < ${TARGET.p50Ms} ms (issue #16); the RSS is this process's (the agent's control-plane parts, started as the agent is, without its libp2p host, TUN and CNI server), not a whole agent's`,
  );
  console.log('peers | initial sync ms | new node → LPM p50 ms | p99 ms | process RSS MB | heap MB | target');
  const sourceCache = await mkdtemp(join(tmpdir(), 'control-plane-source-cache-'));
  try {
    await warmSourceCache(sourceCache);
    const busy: string[] = [];
    for (const size of sizes) {
      const r = await measureSize(size, sourceCache);
      const verdict =
        size !== TARGET.peers
          ? ''
          : `RSS of the parts ${r.rssMB <= TARGET.rssMB ? 'met' : 'MISSED'}, p50 ${r.newNodeP50Ms < TARGET.p50Ms ? 'met' : 'MISSED'}`;
      console.log(
        `${r.peers} | ${r.initialSyncMs.toFixed(0)} | ${r.newNodeP50Ms.toFixed(2)} | ${r.newNodeP99Ms.toFixed(2)} | ${r.rssMB.toFixed(0)} | ${r.heapMB.toFixed(0)} | ${verdict}`,
      );
      busy.push(`${r.peers} peers ${r.newNodeBusyP50Ms.toFixed(2)} ms`);
    }
    // Not a target: what each new Node costs the agent after programming it (see watchSide).
    console.log(
      `new node → agent idle again (the route verifier's pass over the peers the new Node concerns) p50: ${busy.join(', ')}`,
    );
  } finally {
    await rm(sourceCache, { recursive: true, force: true });
  }
}
