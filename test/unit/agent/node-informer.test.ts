// The agent's Node informer against the API test server on loopback: the initial list comes
// in pages (more Nodes than one page holds), and the cache and the events hold trimmed Nodes.
import type { V1Node } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InformerKeeper } from '../../../agent/informer-keeper.ts';
import { NodeApi } from '../../../agent/kube.ts';
import { silentLogger } from '../../../common/log.ts';
import { startApiServer } from '../../../lab/kube-apiserver/server.ts';
import { type Harness, startHarness } from '../kube-apiserver/helpers.ts';

const NODES = 1_050; // more pages than one (LIST_PAGE in common/kube/client.ts)

function node(i: number): V1Node {
  return {
    metadata: {
      name: `n${i}`,
      labels: { site: 's', 'edgemesh.io/relay': 'true' },
      annotations: { 'edgemesh.io/site': 's', other: 'x' },
    },
    status: {
      addresses: [{ type: 'InternalIP', address: `192.168.${Math.floor(i / 250)}.${(i % 250) + 1}` }],
      images: [{ names: [`registry.example.com/app@sha256:${String(i).padStart(64, '0')}`], sizeBytes: 1 }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

describe('NodeApi.nodeInformer', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
    const queue = Array.from({ length: NODES }, (_, i) => i);
    const worker = async () => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) await h.core.createNode({ body: node(i) });
    };
    await Promise.all(Array.from({ length: 8 }, worker));
  }, 120_000);
  afterAll(async () => {
    await h?.close();
  });

  it('lists every Node across pages, then watches; caches and delivers trimmed Nodes', async () => {
    const informer = new NodeApi(h.kc).nodeInformer();
    const added: V1Node[] = [];
    informer.on('add', (n) => added.push(n));
    await informer.start();
    try {
      expect(informer.list()).toHaveLength(NODES);
      expect(new Set(informer.list().map((n) => n.metadata?.name)).size).toBe(NODES);
      const cached = informer.get('n7')!;
      expect(cached.status).toEqual({ addresses: node(7).status!.addresses });
      expect(cached.metadata?.annotations).toEqual({ 'edgemesh.io/site': 's' });

      await h.core.createNode({ body: node(NODES) });
      const deadline = Date.now() + 10_000;
      while (!added.some((n) => n.metadata?.name === `n${NODES}`) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const watched = added.find((n) => n.metadata?.name === `n${NODES}`);
      expect(watched?.status).toEqual({ addresses: node(NODES).status!.addresses });
      expect(watched?.metadata?.labels).toEqual({ 'edgemesh.io/relay': 'true' });
      expect(watched?.metadata?.annotations).toEqual({ 'edgemesh.io/site': 's' });
    } finally {
      await informer.stop();
    }
  }, 60_000);
});

describe('NodeApi.nodeInformer after the API server went back in time', () => {
  it('relists when its resourceVersion is one the server has not reached (an etcd restore)', {
    timeout: 30_000,
  }, async () => {
    let h = await startHarness();
    const port = h.server.port;
    await h.core.createNode({ body: node(1) });
    const informer = new NodeApi(h.kc).nodeInformer();
    // As the agent does: the informer stops when its connection breaks; the keeper restarts it.
    const keeper = new InformerKeeper(informer, { log: silentLogger(), what: 'Node', firstDelayMs: 100 });
    await informer.start();
    try {
      expect(informer.get('n1')).toBeDefined();
      // The restored server counts from far below the informer's resourceVersion: a watch
      // from there gets 504 "Too large resource version", which client-node alone retries as is.
      await h.server.close();
      const restored = await startApiServer({ host: '127.0.0.1', port, initialResourceVersion: 1 });
      const previous = h;
      h = { ...previous, server: restored, close: async () => restored.close().then(() => previous.close()) };
      await h.core.createNode({ body: node(2) });
      const deadline = Date.now() + 20_000;
      while (!(informer.get('n2') !== undefined && informer.get('n1') === undefined) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(informer.get('n2')).toBeDefined();
      expect(informer.get('n1')).toBeUndefined();
    } finally {
      keeper.stop();
      await informer.stop();
      await h.close();
    }
  });
});
