// Object lifecycle beyond plain CRUD: finalizers and deletionTimestamp, delete-collection
// with a selector, namespace deletion, custom-resource schema pruning/validation and the
// status subresource of a CRD.
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
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
const BLOCKS = '/apis/edgemesh.io/v1alpha1/ipamblocks';

// Raw JSON on purpose: client-node's typed ApiextensionsV1Api serializes by its TypeScript
// field names and silently drops `enum` and `x-kubernetes-*` keys written as in YAML.
async function installCrd(crd: object = IPAMBLOCK_CRD): Promise<void> {
  const res = await raw(
    h.server,
    'POST',
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
    JSON.stringify(crd),
  );
  expect(res.status).toBe(201);
}

describe('finalizers', { timeout: 30_000 }, () => {
  it('marks an object with finalizers as deleting and removes it when the last finalizer goes', async () => {
    await h.core.createNode({ body: { ...node('n1'), metadata: { name: 'n1', finalizers: ['edgemesh.io/cleanup'] } } });
    await h.core.deleteNode({ name: 'n1' });
    const deleting = await h.core.readNode({ name: 'n1' });
    expect(deleting.metadata?.deletionTimestamp).toBeInstanceOf(Date);
    await h.core.patchNode({ name: 'n1', body: { metadata: { finalizers: null } } }, merge);
    expect((await failure(h.core.readNode({ name: 'n1' }))).code).toBe(404);
  });
});

describe('collections and namespaces', { timeout: 30_000 }, () => {
  it('deletes a collection by label selector', async () => {
    await h.core.createNode({ body: node('a', { lab: 'x' }) });
    await h.core.createNode({ body: node('b', { lab: 'x' }) });
    await h.core.createNode({ body: node('c') });
    await h.core.deleteCollectionNode({ labelSelector: 'lab=x' });
    expect((await h.core.listNode()).items.map((n) => n.metadata?.name)).toEqual(['c']);
  });

  it('deletes the objects of a deleted namespace', async () => {
    await h.core.createNamespace({ body: { metadata: { name: 'edgemesh-system' } } });
    await h.core.createNamespacedConfigMap({
      namespace: 'edgemesh-system',
      body: { metadata: { name: 'cfg' }, data: { a: '1' } },
    });
    await h.core.createNamespacedConfigMap({
      namespace: 'default',
      body: { metadata: { name: 'cfg' }, data: { a: '2' } },
    });
    await h.core.deleteNamespace({ name: 'edgemesh-system' });
    expect((await h.core.listConfigMapForAllNamespaces()).items.map((c) => c.metadata?.namespace)).toEqual(['default']);
  });
});

describe('custom resource schemas', { timeout: 30_000 }, () => {
  it('refuses unknown fields with fieldValidation=Strict and prunes them (with a Warning) otherwise', async () => {
    await installCrd();
    const body = {
      apiVersion: 'edgemesh.io/v1alpha1',
      kind: 'IPAMBlock',
      metadata: { name: 'b1' },
      spec: { cidr: '10.0.0.0/24', node: 'n1', extra: 1 },
    };
    const strict = await raw(h.server, 'POST', `${BLOCKS}?fieldValidation=Strict`, JSON.stringify(body));
    expect(strict.status).toBe(400);
    expect(strict.json.message).toBe('strict decoding error: unknown field "spec.extra"');
    const res = await fetch(`${h.server.url}${BLOCKS}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('warning')).toContain('unknown field \\"spec.extra\\"');
    const stored = (await res.json()) as { spec: Record<string, unknown> };
    expect(stored.spec).toEqual({ cidr: '10.0.0.0/24', node: 'n1' });
  });

  it('answers schema violations with 422 Invalid naming every field', async () => {
    await installCrd({
      ...IPAMBLOCK_CRD,
      spec: {
        ...IPAMBLOCK_CRD.spec,
        versions: [
          {
            ...IPAMBLOCK_CRD.spec.versions[0],
            schema: {
              openAPIV3Schema: {
                type: 'object',
                required: ['spec'],
                properties: {
                  spec: {
                    type: 'object',
                    required: ['cidr', 'node', 'family'],
                    properties: {
                      cidr: { type: 'string', pattern: '^[0-9a-f.:]+/[0-9]+$' },
                      node: { type: 'string' },
                      family: { type: 'integer', enum: [4, 6] },
                    },
                  },
                },
              },
            },
          },
        ],
      },
    });
    const bad = await raw(
      h.server,
      'POST',
      BLOCKS,
      JSON.stringify({ metadata: { name: 'b1' }, spec: { cidr: 'nonsense', family: 5 } }),
    );
    expect(bad.status).toBe(422);
    expect(bad.json).toMatchObject({ reason: 'Invalid', details: { name: 'b1', kind: 'IPAMBlock.edgemesh.io' } });
    const fields = (bad.json.details as { causes: { field: string }[] }).causes.map((c) => c.field).sort();
    expect(fields).toEqual(['spec.cidr', 'spec.family', 'spec.node']);
    const typeErr = await raw(
      h.server,
      'POST',
      BLOCKS,
      JSON.stringify({ metadata: { name: 'b2' }, spec: { cidr: 7, node: 'n', family: 4 } }),
    );
    expect(typeErr.status).toBe(422);
    expect(String(typeErr.json.message)).toContain('spec.cidr in body must be of type string');
    const missingSpec = await raw(h.server, 'POST', BLOCKS, JSON.stringify({ metadata: { name: 'b3' } }));
    expect(missingSpec.status).toBe(422);
    const ok = await raw(
      h.server,
      'POST',
      BLOCKS,
      JSON.stringify({ metadata: { name: 'b4' }, spec: { cidr: '10.0.0.0/24', node: 'n', family: 4 } }),
    );
    expect(ok.status).toBe(201);
    // A patch that breaks the schema is refused too, and the object is unchanged.
    const badPatch = await raw(
      h.server,
      'PATCH',
      `${BLOCKS}/b4`,
      JSON.stringify({ spec: { family: 7 } }),
      'application/merge-patch+json',
    );
    expect(badPatch.status).toBe(422);
    expect((await raw(h.server, 'GET', `${BLOCKS}/b4`)).json.spec).toMatchObject({ family: 4 });
  });

  it('serves /status for a CRD with the status subresource and keeps the two apart', async () => {
    const versions = [
      {
        ...IPAMBLOCK_CRD.spec.versions[0],
        subresources: { status: {} },
        schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
      },
    ];
    await installCrd({ ...IPAMBLOCK_CRD, spec: { ...IPAMBLOCK_CRD.spec, versions } });
    const created = await raw(
      h.server,
      'POST',
      BLOCKS,
      JSON.stringify({ metadata: { name: 'b1' }, spec: { cidr: '10.0.0.0/24' }, status: { phase: 'ignored' } }),
    );
    expect(created.status).toBe(201);
    expect(created.json.status).toBeUndefined();
    const status = await raw(
      h.server,
      'PATCH',
      `${BLOCKS}/b1/status`,
      JSON.stringify({ status: { phase: 'Bound' }, spec: { cidr: 'x' } }),
      'application/merge-patch+json',
    );
    expect(status.status).toBe(200);
    expect(status.json).toMatchObject({ status: { phase: 'Bound' }, spec: { cidr: '10.0.0.0/24' } });
    const main = await raw(
      h.server,
      'PATCH',
      `${BLOCKS}/b1`,
      JSON.stringify({ status: { phase: 'Lost' }, spec: { cidr: '10.0.1.0/24' } }),
      'application/merge-patch+json',
    );
    expect(main.json).toMatchObject({
      status: { phase: 'Bound' },
      spec: { cidr: '10.0.1.0/24' },
      metadata: { generation: 2 },
    });
  });
});

describe('server-side apply (approximation)', { timeout: 30_000 }, () => {
  it('creates the object when missing and merges the applied fields when present', async () => {
    const apply = (body: object) =>
      fetch(`${h.server.url}/api/v1/nodes/ssa?fieldManager=test`, {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/apply-patch+yaml' },
        body: JSON.stringify(body),
      });
    const created = await apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'ssa', labels: { a: '1' } } });
    expect(created.status).toBe(201);
    const merged = await apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'ssa', labels: { b: '2' } } });
    expect(merged.status).toBe(200);
    expect(((await merged.json()) as { metadata: { labels: object } }).metadata.labels).toEqual({ a: '1', b: '2' });
  });
});

describe('namespaced custom resources', { timeout: 30_000 }, () => {
  const CRD = {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: 'peers.lab.edgemesh.io' },
    spec: {
      group: 'lab.edgemesh.io',
      scope: 'Namespaced',
      names: { plural: 'peers', singular: 'peer', kind: 'Peer' },
      versions: [
        {
          name: 'v1',
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
        },
      ],
    },
  };

  it('serves them per namespace and across namespaces, and ends their watches when the CRD goes', async () => {
    await installCrd(CRD);
    const create = (ns: string, name: string) =>
      h.custom.createNamespacedCustomObject({
        group: 'lab.edgemesh.io',
        version: 'v1',
        plural: 'peers',
        namespace: ns,
        body: { metadata: { name }, spec: {} },
      });
    await create('default', 'p1');
    await create('kube-system', 'p1');
    const inDefault = await h.custom.listNamespacedCustomObject({
      group: 'lab.edgemesh.io',
      version: 'v1',
      plural: 'peers',
      namespace: 'default',
    });
    expect(inDefault.items.map((p: { metadata: { namespace: string } }) => p.metadata.namespace)).toEqual(['default']);
    const all = await raw(h.server, 'GET', '/apis/lab.edgemesh.io/v1/peers');
    expect((all.json.items as unknown[]).length).toBe(2);
    // A cluster-scoped path to a namespaced object does not exist.
    expect((await raw(h.server, 'GET', '/apis/lab.edgemesh.io/v1/peers/p1')).status).toBe(404);

    const res = await fetch(`${h.server.url}/apis/lab.edgemesh.io/v1/namespaces/default/peers?watch=1`);
    expect(res.status).toBe(200);
    const body = res.text();
    await raw(h.server, 'DELETE', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/peers.lab.edgemesh.io');
    // The stream ends (the initial ADDED was delivered first).
    expect(
      (await body)
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).type),
    ).toEqual(['ADDED']);
  });
});
