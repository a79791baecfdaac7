// CRUD semantics of the API test server through @kubernetes/client-node, as IPAM and the
// agent use it: create/get/list/patch/delete, 409 AlreadyExists and Conflict, 404, selectors,
// the status subresource, CRDs served generically, and owner-reference garbage collection.
import { PatchStrategy, setHeaderOptions, type V1Node } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { failure, type Harness, IPAMBLOCK_CRD, node, raw, startHarness } from './helpers.ts';

let h: Harness;
beforeEach(async () => {
  h = await startHarness();
});
afterEach(async () => {
  await h.close();
});

const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const strategic = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);
const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

async function installCrd(): Promise<void> {
  const api = h.kc.makeApiClient((await import('@kubernetes/client-node')).ApiextensionsV1Api);
  await api.createCustomResourceDefinition({ body: IPAMBLOCK_CRD as never });
}

function block(name: string, nodeName: string, nodeUid?: string) {
  return {
    apiVersion: 'edgemesh.io/v1alpha1',
    kind: 'IPAMBlock',
    metadata: {
      name,
      ...(nodeUid ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: nodeName, uid: nodeUid }] } : {}),
    },
    spec: { cidr: name.replace(/-(\d+)$/, '/$1').replace(/-/g, '.'), node: nodeName },
  };
}

describe('core/v1 nodes', { timeout: 30_000 }, () => {
  it('creates, gets, lists, patches and deletes a node with server-set metadata', async () => {
    const created = await h.core.createNode({ body: node('n1', { site: 'a' }) });
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.metadata?.resourceVersion).toMatch(/^[0-9]+$/);
    expect(created.metadata?.creationTimestamp).toBeInstanceOf(Date);

    const got = await h.core.readNode({ name: 'n1' });
    expect(got.metadata?.uid).toBe(created.metadata?.uid);

    const list = await h.core.listNode();
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['n1']);
    expect(Number(list.metadata?.resourceVersion)).toBeGreaterThanOrEqual(Number(created.metadata?.resourceVersion));

    const patched = await h.core.patchNode(
      { name: 'n1', body: { metadata: { annotations: { 'edgemesh.io/peer-id': '12D3Koo' } } } },
      merge,
    );
    expect(patched.metadata?.annotations?.['edgemesh.io/peer-id']).toBe('12D3Koo');
    expect(Number(patched.metadata?.resourceVersion)).toBeGreaterThan(Number(created.metadata?.resourceVersion));

    await h.core.deleteNode({ name: 'n1' });
    const gone = await failure(h.core.readNode({ name: 'n1' }));
    expect(gone.code).toBe(404);
    expect(gone.body).toMatchObject({
      kind: 'Status',
      reason: 'NotFound',
      code: 404,
      details: { name: 'n1', kind: 'nodes' },
    });
  });

  it('answers a duplicate create with a 409 AlreadyExists Status', async () => {
    await h.core.createNode({ body: node('dup') });
    const err = await failure(h.core.createNode({ body: node('dup') }));
    expect(err.code).toBe(409);
    expect(err.body).toMatchObject({
      kind: 'Status',
      status: 'Failure',
      reason: 'AlreadyExists',
      code: 409,
      details: { name: 'dup', kind: 'nodes' },
    });
  });

  it('answers an update with a stale resourceVersion with 409 Conflict, and accepts the current one', async () => {
    const v1 = await h.core.createNode({ body: node('n1') });
    const v2 = await h.core.replaceNode({
      name: 'n1',
      body: { ...v1, metadata: { ...v1.metadata, labels: { step: 'two' } } } as V1Node,
    });
    expect(v2.metadata?.labels).toEqual({ step: 'two' });
    const stale = await failure(
      h.core.replaceNode({
        name: 'n1',
        body: { ...v1, metadata: { ...v1.metadata, labels: { step: 'three' } } } as V1Node,
      }),
    );
    expect(stale.code).toBe(409);
    expect(stale.body).toMatchObject({ reason: 'Conflict', details: { name: 'n1' } });
    // A patch that carries a resourceVersion is a precondition too.
    const stalePatch = await failure(
      h.core.patchNode(
        { name: 'n1', body: { metadata: { resourceVersion: v1.metadata?.resourceVersion, labels: { x: 'y' } } } },
        merge,
      ),
    );
    expect(stalePatch.code).toBe(409);
  });

  it('merges status.conditions by type and unions spec.podCIDRs in a strategic merge patch', async () => {
    await h.core.createNode({
      body: {
        ...node('n1'),
        spec: { podCIDRs: ['10.244.1.0/24'] },
        status: {
          conditions: [
            { type: 'Ready', status: 'True' },
            { type: 'NetworkUnavailable', status: 'True', reason: 'NoRoute' },
          ],
        },
      },
    });
    const patched = await h.core.patchNodeStatus(
      {
        name: 'n1',
        body: { status: { conditions: [{ type: 'NetworkUnavailable', status: 'False', reason: 'EdgemeshReady' }] } },
      },
      strategic,
    );
    expect(patched.status?.conditions).toEqual([
      { type: 'Ready', status: 'True' },
      { type: 'NetworkUnavailable', status: 'False', reason: 'EdgemeshReady' },
    ]);
    const withV6 = await h.core.patchNode(
      { name: 'n1', body: { spec: { podCIDRs: ['fd00:10:244:1::/64'] } } },
      strategic,
    );
    expect(withV6.spec?.podCIDRs).toEqual(['10.244.1.0/24', 'fd00:10:244:1::/64']);
    // A JSON merge patch replaces the list instead.
    const replaced = await h.core.patchNode({ name: 'n1', body: { spec: { podCIDRs: ['10.244.9.0/24'] } } }, merge);
    expect(replaced.spec?.podCIDRs).toEqual(['10.244.9.0/24']);
  });

  it('applies a JSON patch (add, replace, remove, test)', async () => {
    await h.core.createNode({ body: node('n1', { a: '1' }) });
    const patched = await h.core.patchNode(
      {
        name: 'n1',
        body: [
          { op: 'test', path: '/metadata/labels/a', value: '1' },
          { op: 'add', path: '/metadata/labels/b', value: '2' },
          { op: 'replace', path: '/metadata/labels/a', value: '3' },
          { op: 'add', path: '/metadata/annotations', value: { 'x~y/z': 'v' } },
          { op: 'remove', path: '/metadata/annotations/x~0y~1z' },
        ],
      },
      jsonPatch,
    );
    expect(patched.metadata?.labels).toEqual({ a: '3', b: '2' });
    expect(patched.metadata?.annotations).toEqual({});
    const failedTest = await failure(
      h.core.patchNode({ name: 'n1', body: [{ op: 'test', path: '/metadata/labels/a', value: 'nope' }] }, jsonPatch),
    );
    expect(failedTest.code).toBe(422);
  });

  it('keeps status out of main-resource writes and spec out of /status writes', async () => {
    await h.core.createNode({ body: { ...node('n1'), status: { conditions: [{ type: 'Ready', status: 'True' }] } } });
    const viaMain = await h.core.patchNode(
      { name: 'n1', body: { spec: { unschedulable: true }, status: { conditions: [] } } },
      merge,
    );
    expect(viaMain.spec?.unschedulable).toBe(true);
    expect(viaMain.status?.conditions).toEqual([{ type: 'Ready', status: 'True' }]);
    expect(viaMain.metadata?.generation).toBe(2);
    const viaStatus = await h.core.patchNodeStatus(
      { name: 'n1', body: { spec: { unschedulable: false }, status: { phase: 'Running' } } },
      merge,
    );
    expect(viaStatus.spec?.unschedulable).toBe(true);
    expect(viaStatus.status?.phase).toBe('Running');
  });

  it('filters lists with label selectors (=, !=, in, notin, exists, !exists) and metadata.name', async () => {
    await h.core.createNode({ body: node('a', { site: 'edge1', relay: 'true' }) });
    await h.core.createNode({ body: node('b', { site: 'edge2' }) });
    await h.core.createNode({ body: node('c', { site: 'cloud', relay: 'true' }) });
    const names = async (labelSelector?: string, fieldSelector?: string) =>
      (await h.core.listNode({ labelSelector, fieldSelector })).items.map((n) => n.metadata?.name);
    expect(await names('site=edge1')).toEqual(['a']);
    expect(await names('site==edge2')).toEqual(['b']);
    expect(await names('site!=edge1')).toEqual(['b', 'c']);
    expect(await names('site in (edge1, cloud)')).toEqual(['a', 'c']);
    expect(await names('site notin (edge1,cloud)')).toEqual(['b']);
    expect(await names('relay')).toEqual(['a', 'c']);
    expect(await names('!relay')).toEqual(['b']);
    expect(await names('relay,site=cloud')).toEqual(['c']);
    expect(await names(undefined, 'metadata.name=b')).toEqual(['b']);
    expect(await names(undefined, 'metadata.name!=b')).toEqual(['a', 'c']);
    const bad = await failure(h.core.listNode({ fieldSelector: 'spec.nope=1' }));
    expect(bad.code).toBe(400);
    expect(String(bad.body.message)).toContain('field label not supported');
  });

  it('lets exactly one of 50 concurrent creates of the same name win', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) => h.core.createNode({ body: node('contended', { writer: String(i) }) })),
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(49);
    for (const r of lost) expect((r.reason as { code: number }).code).toBe(409);
  });

  it('pages a list with limit and continue', async () => {
    for (const n of ['a', 'b', 'c', 'd', 'e']) await h.core.createNode({ body: node(n) });
    const first = await h.core.listNode({ limit: 2 });
    expect(first.items.map((n) => n.metadata?.name)).toEqual(['a', 'b']);
    expect(first.metadata?.remainingItemCount).toBe(3);
    const second = await h.core.listNode({ limit: 2, _continue: first.metadata?._continue });
    expect(second.items.map((n) => n.metadata?.name)).toEqual(['c', 'd']);
    const last = await h.core.listNode({ limit: 2, _continue: second.metadata?._continue });
    expect(last.items.map((n) => n.metadata?.name)).toEqual(['e']);
    expect(last.metadata?._continue).toBeUndefined();
  });
});

describe('namespaced resources', { timeout: 30_000 }, () => {
  it('creates events in an existing namespace and refuses an unknown namespace', async () => {
    const ev = await h.core.createNamespacedEvent({
      namespace: 'default',
      body: {
        metadata: { generateName: 'n1.' },
        involvedObject: { kind: 'Node', name: 'n1' },
        reason: 'PodCIDROutsideCluster',
        message: 'spec.podCIDRs 10.9.0.0/24 is outside the cluster CIDR',
        type: 'Warning',
      },
    });
    expect(ev.metadata?.name).toMatch(/^n1\.[a-z0-9]{5}$/);
    expect(ev.metadata?.namespace).toBe('default');
    const list = await h.core.listNamespacedEvent({ namespace: 'default', fieldSelector: 'involvedObject.name=n1' });
    expect(list.items).toHaveLength(1);
    const missing = await failure(
      h.core.createNamespacedEvent({ namespace: 'nope', body: { metadata: { name: 'x' }, involvedObject: {} } }),
    );
    expect(missing.code).toBe(404);
    expect(missing.body).toMatchObject({ reason: 'NotFound', details: { name: 'nope', kind: 'namespaces' } });
  });
});

describe('custom resources', { timeout: 30_000 }, () => {
  it('serves a CRD generically once it is created (and says so in discovery and CRD status)', async () => {
    const before = await raw(h.server, 'GET', '/apis/edgemesh.io/v1alpha1/ipamblocks');
    expect(before.status).toBe(404);
    await installCrd();
    const discovery = await raw(h.server, 'GET', '/apis/edgemesh.io/v1alpha1');
    expect(discovery.json).toMatchObject({
      kind: 'APIResourceList',
      groupVersion: 'edgemesh.io/v1alpha1',
      resources: [{ name: 'ipamblocks', kind: 'IPAMBlock', namespaced: false }],
    });
    const crd = await raw(
      h.server,
      'GET',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ipamblocks.edgemesh.io',
    );
    expect((crd.json.status as { conditions: { type: string; status: string }[] }).conditions).toContainEqual(
      expect.objectContaining({ type: 'Established', status: 'True' }),
    );

    const created = await h.custom.createClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
      body: block('10-244-1-0-24', 'n1'),
    });
    expect(created.metadata.uid).toBeTruthy();
    const dup = await failure(
      h.custom.createClusterCustomObject({
        group: 'edgemesh.io',
        version: 'v1alpha1',
        plural: 'ipamblocks',
        body: block('10-244-1-0-24', 'n2'),
      }),
    );
    expect(dup.code).toBe(409);
    expect(dup.body).toMatchObject({
      reason: 'AlreadyExists',
      details: { name: '10-244-1-0-24', group: 'edgemesh.io', kind: 'ipamblocks' },
    });

    const got = await h.custom.getClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
      name: '10-244-1-0-24',
    });
    expect(got.spec).toEqual({ cidr: '10.244.1.0/24', node: 'n1' });
    const patched = await h.custom.patchClusterCustomObject(
      {
        group: 'edgemesh.io',
        version: 'v1alpha1',
        plural: 'ipamblocks',
        name: '10-244-1-0-24',
        body: { metadata: { labels: { node: 'n1' } } },
      },
      merge,
    );
    expect(patched.metadata.labels).toEqual({ node: 'n1' });
    const listed = await h.custom.listClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
      labelSelector: 'node=n1',
    });
    expect(listed.kind).toBe('IPAMBlockList');
    expect(listed.items).toHaveLength(1);
    // Strategic merge patch is not defined for custom resources: 415, as kube-apiserver answers.
    const smp = await failure(
      h.custom.patchClusterCustomObject(
        {
          group: 'edgemesh.io',
          version: 'v1alpha1',
          plural: 'ipamblocks',
          name: '10-244-1-0-24',
          body: { metadata: {} },
        },
        strategic,
      ),
    );
    expect(smp.code).toBe(415);
    await h.custom.deleteClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
      name: '10-244-1-0-24',
    });
    const gone = await failure(
      h.custom.getClusterCustomObject({
        group: 'edgemesh.io',
        version: 'v1alpha1',
        plural: 'ipamblocks',
        name: '10-244-1-0-24',
      }),
    );
    expect(gone.code).toBe(404);
  });

  it('garbage-collects the IPAMBlocks owned by a Node when the Node is deleted', async () => {
    await installCrd();
    const n1 = await h.core.createNode({ body: node('n1') });
    const n2 = await h.core.createNode({ body: node('n2') });
    const create = (b: object) =>
      h.custom.createClusterCustomObject({ group: 'edgemesh.io', version: 'v1alpha1', plural: 'ipamblocks', body: b });
    await create(block('10-244-1-0-24', 'n1', n1.metadata!.uid));
    await create(block('10-244-2-0-24', 'n1', n1.metadata!.uid));
    await create(block('10-244-3-0-24', 'n2', n2.metadata!.uid));
    await h.core.deleteNode({ name: 'n1' });
    const left = await h.custom.listClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
    });
    expect(left.items.map((b: { metadata: { name: string } }) => b.metadata.name)).toEqual(['10-244-3-0-24']);
    // The freed name can be claimed again by another node.
    await create(block('10-244-1-0-24', 'n2', n2.metadata!.uid));
  });

  it('collects, shortly after, a dependent created with an owner uid that does not exist', async () => {
    await installCrd();
    const n1 = await h.core.createNode({ body: node('n1') });
    const create = (b: object) =>
      h.custom.createClusterCustomObject({ group: 'edgemesh.io', version: 'v1alpha1', plural: 'ipamblocks', body: b });
    // The uid of an earlier Node of the same name: that owner is absent, so the block goes.
    await create(block('10-244-4-0-24', 'n1', '00000000-0000-0000-0000-000000000000'));
    await create(block('10-244-5-0-24', 'n1', n1.metadata!.uid));
    const names = async () =>
      (
        await h.custom.listClusterCustomObject({ group: 'edgemesh.io', version: 'v1alpha1', plural: 'ipamblocks' })
      ).items.map((b: { metadata: { name: string } }) => b.metadata.name);
    const deadline = Date.now() + 5000;
    while ((await names()).length !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await names()).toEqual(['10-244-5-0-24']);
  });

  it('orphans dependents instead with propagationPolicy=Orphan', async () => {
    await installCrd();
    const n1 = await h.core.createNode({ body: node('n1') });
    await h.custom.createClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
      body: block('10-244-1-0-24', 'n1', n1.metadata!.uid),
    });
    await h.core.deleteNode({ name: 'n1', propagationPolicy: 'Orphan' });
    const kept = await h.custom.getClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
      name: '10-244-1-0-24',
    });
    expect(kept.metadata.ownerReferences).toBeUndefined();
  });

  it('stops serving a resource and drops its objects when the CRD is deleted', async () => {
    await installCrd();
    await h.custom.createClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
      body: block('10-244-1-0-24', 'n1'),
    });
    const del = await raw(
      h.server,
      'DELETE',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ipamblocks.edgemesh.io',
    );
    expect(del.status).toBe(200);
    expect((await raw(h.server, 'GET', '/apis/edgemesh.io/v1alpha1/ipamblocks')).status).toBe(404);
    await installCrd();
    const list = await h.custom.listClusterCustomObject({
      group: 'edgemesh.io',
      version: 'v1alpha1',
      plural: 'ipamblocks',
    });
    expect(list.items).toEqual([]);
  });
});

describe('bad input', { timeout: 30_000 }, () => {
  it('answers malformed or mismatched bodies with clear 400/422/413/415 Status objects', async () => {
    const notJson = await raw(h.server, 'POST', '/api/v1/nodes', '{"metadata": ');
    expect(notJson.status).toBe(400);
    expect(notJson.json).toMatchObject({ kind: 'Status', reason: 'BadRequest', code: 400 });
    expect(String(notJson.json.message)).toContain('not valid JSON');

    const array = await raw(h.server, 'POST', '/api/v1/nodes', '[1,2]');
    expect(array.status).toBe(400);

    const wrongKind = await raw(
      h.server,
      'POST',
      '/api/v1/nodes',
      JSON.stringify({ kind: 'Pod', metadata: { name: 'x' } }),
    );
    expect(wrongKind.status).toBe(400);
    expect(String(wrongKind.json.message)).toContain('does not match the expected kind');

    const noName = await raw(h.server, 'POST', '/api/v1/nodes', JSON.stringify({ metadata: {} }));
    expect(noName.status).toBe(422);
    expect(noName.json).toMatchObject({ reason: 'Invalid', details: { causes: [{ field: 'metadata.name' }] } });

    const badName = await raw(h.server, 'POST', '/api/v1/nodes', JSON.stringify({ metadata: { name: 'Bad_Name' } }));
    expect(badName.status).toBe(422);

    const badLabel = await raw(
      h.server,
      'POST',
      '/api/v1/nodes',
      JSON.stringify({ metadata: { name: 'x', labels: { a: 'not ok!' } } }),
    );
    expect(badLabel.status).toBe(422);

    const huge = await raw(
      h.server,
      'POST',
      '/api/v1/nodes',
      JSON.stringify({ metadata: { name: 'x' }, pad: 'x'.repeat(4 << 20) }),
    );
    expect(huge.status).toBe(413);

    await h.core.createNode({ body: node('n1') });
    const badPatchType = await raw(h.server, 'PATCH', '/api/v1/nodes/n1', '{}', 'text/plain');
    expect(badPatchType.status).toBe(415);
    const objectAsJsonPatch = await raw(h.server, 'PATCH', '/api/v1/nodes/n1', '{}', 'application/json-patch+json');
    expect(objectAsJsonPatch.status).toBe(400);

    const unknownPath = await raw(h.server, 'GET', '/apis/nope.io/v1/things');
    expect(unknownPath.status).toBe(404);
    expect(unknownPath.json).toMatchObject({ kind: 'Status', reason: 'NotFound' });
    const badEscape = await raw(h.server, 'GET', '/api/v1/nodes/%E0%A4%A');
    expect(badEscape.status).toBe(400);
    // The server is still healthy after all of it.
    const health = await fetch(`${h.server.url}/healthz`);
    expect(await health.text()).toBe('ok');
    expect((await h.core.readNode({ name: 'n1' })).metadata?.name).toBe('n1');
  });
});
