// claimNodeBlocks against the Kubernetes API test server (lab/kube-apiserver) on loopback:
// every node has its own KubeConfig and API client, as separate agents would.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, type V1Node } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { overlaps } from '../../../ipam/cidr.ts';
import { IpamError } from '../../../ipam/errors.ts';
import {
  blockObjectName,
  claimNodeBlocks,
  firstCandidateIndex,
  IPAM_CONDITION,
  IPAM_GROUP,
  IPAM_PLURAL,
  IPAM_VERSION,
  type IpamBlockObject,
  releaseNodeBlocks,
} from '../../../ipam/node-blocks.ts';
import type { NodeBlock } from '../../../ipam/types.ts';
import { type ApiServer, startApiServer } from '../../../lab/kube-apiserver/server.ts';

const CRD_PATH = join(import.meta.dirname, '../../../deploy/crds/ipamblock.yaml');

let server: ApiServer;
let dir: string;
let kubeconfigPath: string;
let admin: KubeConfig;
let core: CoreV1Api;
let custom: CustomObjectsApi;

/** A fresh KubeConfig (and so a fresh HTTP client) per simulated agent. */
function agentKubeconfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc;
}

async function createNode(name: string, podCIDRs?: string[]): Promise<V1Node> {
  return core.createNode({ body: { metadata: { name }, spec: podCIDRs ? { podCIDRs, podCIDR: podCIDRs[0] } : {} } });
}

async function listBlocks(): Promise<IpamBlockObject[]> {
  const list = (await custom.listClusterCustomObject({
    group: IPAM_GROUP,
    version: IPAM_VERSION,
    plural: IPAM_PLURAL,
  })) as {
    items: IpamBlockObject[];
  };
  return list.items;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  server = await startApiServer({ host: '127.0.0.1', port: 0 });
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-ipam-api-'));
  kubeconfigPath = join(dir, 'kubeconfig');
  await server.writeKubeconfig(kubeconfigPath, 'ipam-test');
  admin = agentKubeconfig();
  core = admin.makeApiClient(CoreV1Api);
  custom = admin.makeApiClient(CustomObjectsApi);
  const crd = parse(await readFile(CRD_PATH, 'utf8'));
  await admin.makeApiClient(ApiextensionsV1Api).createCustomResourceDefinition({ body: crd });
});

afterAll(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function expectDisjoint(blocks: NodeBlock[]): void {
  for (let i = 0; i < blocks.length; i++) {
    for (let j = i + 1; j < blocks.length; j++) {
      expect(overlaps((blocks[i] as NodeBlock).cidr, (blocks[j] as NodeBlock).cidr)).toBe(false);
    }
  }
}

describe('claimNodeBlocks', () => {
  it('50 agents registering at once get 50 distinct, non-overlapping dual-stack blocks', async () => {
    const names = Array.from({ length: 50 }, (_, i) => `race-${i}`);
    const nodes = await Promise.all(names.map((n) => createNode(n)));
    // 64 v4 blocks and 256 v6 blocks for 50 nodes: start points collide, 409s must be handled.
    const results = await Promise.all(
      names.map((nodeName) =>
        claimNodeBlocks({
          kubeconfig: agentKubeconfig(),
          nodeName,
          clusterCidrs: ['10.100.0.0/18', 'fd00:100::/72'],
        }),
      ),
    );
    for (const r of results) {
      expect(r.map((b) => b.family)).toEqual([4, 6]);
      expect(r[0]?.cidr).toMatch(/^10\.100\.\d+\.0\/24$/);
      expect(r[1]?.cidr).toMatch(/\/80$/);
    }
    const v4 = results.map((r) => r[0] as NodeBlock);
    const v6 = results.map((r) => r[1] as NodeBlock);
    expect(new Set(v4.map((b) => b.cidr)).size).toBe(50);
    expect(new Set(v6.map((b) => b.cidr)).size).toBe(50);
    expectDisjoint(v4);
    expectDisjoint(v6);
    expect(v4[0]?.gateway).toBe(v4[0]?.cidr.replace(/0\/24$/, '1'));

    // The API objects agree: one per node and family, named after the CIDR, owned by the Node.
    const objects = (await listBlocks()).filter((b) => b.spec.node.startsWith('race-'));
    expect(objects).toHaveLength(100);
    for (const [i, name] of names.entries()) {
      const mine = objects.filter((o) => o.spec.node === name);
      expect(mine.map((o) => o.spec.cidr).sort()).toEqual([v4[i]?.cidr, v6[i]?.cidr].sort());
      for (const o of mine) {
        expect(o.metadata.name).toBe(blockObjectName(o.spec.cidr));
        expect(o.metadata.ownerReferences).toEqual([
          expect.objectContaining({ kind: 'Node', apiVersion: 'v1', name, uid: nodes[i]?.metadata?.uid }),
        ]);
      }
    }
    // Each node reports readiness on its Node object.
    const n0 = await core.readNode({ name: names[0] as string });
    expect(n0.status?.conditions?.find((c) => c.type === IPAM_CONDITION)).toMatchObject({
      status: 'True',
      reason: 'BlocksAssigned',
    });
  });

  it('a restarted agent reuses the block it owns', async () => {
    await createNode('restart-a');
    const opts = { nodeName: 'restart-a', clusterCidrs: ['10.101.0.0/16'] };
    const first = await claimNodeBlocks({ kubeconfig: agentKubeconfig(), ...opts });
    const second = await claimNodeBlocks({ kubeconfig: agentKubeconfig(), ...opts });
    expect(second).toEqual(first);
    expect((await listBlocks()).filter((b) => b.spec.node === 'restart-a')).toHaveLength(1);
  });

  it('deleting a Node garbage-collects its block and another node can take it', async () => {
    const cluster = ['10.102.0.0/22']; // 4 blocks of /24
    const names = ['full-0', 'full-1', 'full-2', 'full-3'];
    for (const n of names) await createNode(n);
    const claimed = await Promise.all(
      names.map((nodeName) => claimNodeBlocks({ kubeconfig: agentKubeconfig(), nodeName, clusterCidrs: cluster })),
    );
    expect(new Set(claimed.map((r) => r[0]?.cidr)).size).toBe(4);

    await createNode('late');
    const err = await claimNodeBlocks({ kubeconfig: agentKubeconfig(), nodeName: 'late', clusterCidrs: cluster }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(IpamError);
    expect((err as IpamError).message).toBe(
      'no free /24 block left in cluster CIDR 10.102.0.0/22 (4 blocks, all taken)',
    );

    const freed = claimed[2]?.[0]?.cidr as string;
    await core.deleteNode({ name: 'full-2' });
    await waitFor('the IPAMBlock of full-2 to be garbage-collected', async () =>
      (await listBlocks()).every((b) => b.spec.node !== 'full-2'),
    );
    const late = await claimNodeBlocks({ kubeconfig: agentKubeconfig(), nodeName: 'late', clusterCidrs: cluster });
    expect(late[0]?.cidr).toBe(freed);
  });

  it('uses node.spec.podCIDRs from the control plane and keeps other claims away from it', async () => {
    await createNode('pc-a', ['10.103.0.0/24']);
    // A node whose first candidate is block 0 — exactly pc-a's podCIDR.
    const pcB = Array.from({ length: 64 }, (_, i) => `pc-b${i}`).find(
      (n) => firstCandidateIndex(n, 2n) === 0n,
    ) as string;
    await createNode(pcB);
    const a = await claimNodeBlocks({
      kubeconfig: agentKubeconfig(),
      nodeName: 'pc-a',
      clusterCidrs: ['10.103.0.0/23'],
    });
    expect(a).toEqual([{ family: 4, cidr: '10.103.0.0/24', gateway: '10.103.0.1' }]);
    expect((await listBlocks()).filter((b) => b.spec.node === 'pc-a')).toHaveLength(0);
    const b = await claimNodeBlocks({ kubeconfig: agentKubeconfig(), nodeName: pcB, clusterCidrs: ['10.103.0.0/23'] });
    expect(b[0]?.cidr).toBe('10.103.1.0/24');
  });

  it('refuses podCIDRs outside the cluster CIDR with a clear error and a Node condition', async () => {
    await createNode('outside', ['192.168.50.0/24']);
    const err = await claimNodeBlocks({
      kubeconfig: agentKubeconfig(),
      nodeName: 'outside',
      clusterCidrs: ['10.104.0.0/16'],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpamError);
    expect((err as IpamError).reason).toBe('PodCIDROutsideClusterCIDR');
    expect((err as IpamError).message).toContain(
      'node outside has spec.podCIDRs 192.168.50.0/24, outside the cluster CIDR 10.104.0.0/16',
    );
    const node = await core.readNode({ name: 'outside' });
    const condition = node.status?.conditions?.find((c) => c.type === IPAM_CONDITION);
    expect(condition).toMatchObject({ status: 'False', reason: 'PodCIDROutsideClusterCIDR' });
    expect(condition?.message).toContain('outside the cluster CIDR 10.104.0.0/16');
    // …and an Event on the Node, as `kubectl describe node` shows them.
    const events = await core.listNamespacedEvent({ namespace: 'default' });
    expect(events.items.find((e) => e.involvedObject.name === 'outside')).toMatchObject({
      type: 'Warning',
      reason: 'PodCIDROutsideClusterCIDR',
      involvedObject: { kind: 'Node', name: 'outside' },
    });
  });

  it('reports a podCIDR that overlaps another node’s IPAMBlock', async () => {
    await createNode('ov-a');
    const [a] = await claimNodeBlocks({
      kubeconfig: agentKubeconfig(),
      nodeName: 'ov-a',
      clusterCidrs: ['10.105.0.0/16'],
    });
    await createNode('ov-b', [a?.cidr as string]);
    const [b] = await claimNodeBlocks({
      kubeconfig: agentKubeconfig(),
      nodeName: 'ov-b',
      clusterCidrs: ['10.105.0.0/16'],
    });
    expect(b?.cidr).toBe(a?.cidr);
    const node = await core.readNode({ name: 'ov-b' });
    const condition = node.status?.conditions?.find((c) => c.type === IPAM_CONDITION);
    expect(condition?.reason).toBe('OverlappingPodCIDR');
    expect(condition?.message).toContain(
      `overlaps ${a?.cidr} (IPAMBlock ${blockObjectName(a?.cidr as string)} (node ov-a))`,
    );
  });

  it('releaseNodeBlocks deletes the node’s blocks; a missing node or CRD is a clear error', async () => {
    await createNode('rel');
    const [blk] = await claimNodeBlocks({
      kubeconfig: agentKubeconfig(),
      nodeName: 'rel',
      clusterCidrs: ['10.106.0.0/16'],
    });
    expect(await releaseNodeBlocks({ kubeconfig: agentKubeconfig(), nodeName: 'rel' })).toEqual([blk?.cidr]);
    expect((await listBlocks()).filter((b) => b.spec.node === 'rel')).toHaveLength(0);

    await expect(
      claimNodeBlocks({ kubeconfig: agentKubeconfig(), nodeName: 'nope', clusterCidrs: ['10.106.0.0/16'] }),
    ).rejects.toThrow('node nope does not exist');

    const bare = await startApiServer({ host: '127.0.0.1', port: 0 });
    try {
      const path = join(dir, 'bare-kubeconfig');
      await bare.writeKubeconfig(path, 'ipam-test');
      const kc = new KubeConfig();
      kc.loadFromFile(path);
      await kc.makeApiClient(CoreV1Api).createNode({ body: { metadata: { name: 'n' } } });
      await expect(claimNodeBlocks({ kubeconfig: kc, nodeName: 'n', clusterCidrs: ['10.0.0.0/16'] })).rejects.toThrow(
        /IPAMBlock CRD .* is not installed: kubectl apply -f deploy\/crds\/ipamblock.yaml/,
      );
    } finally {
      await bare.close();
    }
  });
});
