// kubectl (Debian's kubernetes-client, 1.32) against the API test server, as an outside check
// that the double behaves like kube-apiserver for a real client: discovery, OpenAPI v3 lookup,
// server-side printing, apply, annotate, label, delete with garbage collection, get --watch.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiServer, startApiServer } from '../../../lab/kube-apiserver/server.ts';

const run = promisify(execFile);
const KUBECTL = '/usr/bin/kubectl';
const PROJECT_CRD = join(import.meta.dirname, '../../../deploy/crds/ipamblock.yaml');

const FALLBACK_CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ipamblocks.edgemesh.io
spec:
  group: edgemesh.io
  scope: Cluster
  names: {plural: ipamblocks, singular: ipamblock, kind: IPAMBlock, listKind: IPAMBlockList}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
`;

let server: ApiServer;
let dir: string;
let kubeconfig: string;
const children = new Set<ChildProcess>();

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await run(KUBECTL, ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], {
    timeout: 30_000,
  });
  return stdout;
}

beforeAll(async () => {
  server = await startApiServer({ host: '127.0.0.1', port: 0 });
  dir = await mkdtemp(join(tmpdir(), 'kas-kubectl-'));
  kubeconfig = join(dir, 'kubeconfig');
  await server.writeKubeconfig(kubeconfig);
});

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('kubectl against the API test server', () => {
  it('applies the IPAMBlock CRD and serves ipamblocks', async () => {
    const crdPath = existsSync(PROJECT_CRD) ? PROJECT_CRD : join(dir, 'ipamblock-crd.yaml');
    if (crdPath !== PROJECT_CRD) await writeFile(crdPath, FALLBACK_CRD);
    expect(await kubectl('apply', '-f', crdPath)).toContain(
      'customresourcedefinition.apiextensions.k8s.io/ipamblocks.edgemesh.io created',
    );
    expect(await kubectl('get', 'crd')).toContain('ipamblocks.edgemesh.io');
    // Applying the same file again is a no-op patch, not an error.
    expect(await kubectl('apply', '-f', crdPath)).toContain('unchanged');
  });

  it('creates a node, prints it as yaml, annotates and labels it', async () => {
    const manifest = join(dir, 'node.yaml');
    await writeFile(
      manifest,
      'apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-1\n  labels: {edgemesh.io/site: edge1}\nspec:\n  podCIDRs: [10.244.1.0/24]\n',
    );
    expect(await kubectl('apply', '-f', manifest)).toContain('node/edge-1 created');
    const yaml = await kubectl('get', 'nodes', '-o', 'yaml');
    expect(yaml).toContain('kind: List');
    expect(yaml).toContain('name: edge-1');
    expect(yaml).toMatch(/uid: [0-9a-f-]{36}/);
    expect(yaml).toContain('- 10.244.1.0/24');

    expect(await kubectl('annotate', 'node', 'edge-1', 'edgemesh.io/peer-id=12D3KooWTest')).toContain(
      'node/edge-1 annotated',
    );
    expect(await kubectl('label', 'node', 'edge-1', 'node-role.kubernetes.io/relay=')).toContain('node/edge-1 labeled');
    const got = JSON.parse(await kubectl('get', 'node', 'edge-1', '-o', 'json'));
    expect(got.metadata.annotations['edgemesh.io/peer-id']).toBe('12D3KooWTest');
    expect(got.metadata.labels['node-role.kubernetes.io/relay']).toBe('');
    // Server-side printing: the table kubectl shows by default.
    const table = await kubectl('get', 'nodes', '-l', 'edgemesh.io/site=edge1');
    expect(table).toMatch(/^NAME\s+STATUS\s+ROLES\s+AGE\s+VERSION/);
    expect(table).toMatch(/edge-1\s+NotReady\s+relay\s+\d+s/);
    expect(await kubectl('get', 'nodes', '--field-selector', 'metadata.name=edge-1', '-o', 'name')).toBe(
      'node/edge-1\n',
    );
    // annotate --overwrite=false on an existing key is refused by kubectl itself; with
    // --overwrite the server takes the new value.
    await kubectl('annotate', '--overwrite', 'node', 'edge-1', 'edgemesh.io/peer-id=12D3KooWOther');
    expect(
      await kubectl('get', 'node', 'edge-1', '-o', "jsonpath={.metadata.annotations['edgemesh\\.io/peer-id']}"),
    ).toBe('12D3KooWOther');
  });

  it('lists ipamblocks and garbage-collects a node’s block when the node is deleted', async () => {
    const uid = (await kubectl('get', 'node', 'edge-1', '-o', 'jsonpath={.metadata.uid}')).trim();
    const manifest = join(dir, 'blocks.yaml');
    const block = (name: string, cidr: string, owner?: string) =>
      `apiVersion: edgemesh.io/v1alpha1\nkind: IPAMBlock\nmetadata:\n  name: ${name}\n` +
      (owner ? `  ownerReferences: [{apiVersion: v1, kind: Node, name: edge-1, uid: ${owner}}]\n` : '') +
      `spec: {cidr: ${cidr}, node: edge-1, family: 4}\n`;
    await writeFile(
      manifest,
      `${block('10-244-1-0-24', '10.244.1.0/24', uid)}---\n${block('10-244-9-0-24', '10.244.9.0/24')}`,
    );
    await kubectl('apply', '-f', manifest);
    const names = await kubectl('get', 'ipamblocks', '-o', 'name');
    expect(names.split('\n').filter(Boolean).sort()).toEqual([
      'ipamblock.edgemesh.io/10-244-1-0-24',
      'ipamblock.edgemesh.io/10-244-9-0-24',
    ]);
    // Server-side printing uses the CRD's additionalPrinterColumns when it has them.
    const table = await kubectl('get', 'ipamblocks');
    expect(table).toMatch(/^NAME\s/);
    expect(table).toMatch(/^10-244-1-0-24\s/m);

    expect(await kubectl('delete', 'node', 'edge-1')).toContain('node "edge-1" deleted');
    expect(await kubectl('get', 'nodes', '-o', 'name')).toBe('');
    // Only the block owned by the node went with it.
    expect(await kubectl('get', 'ipamblocks', '-o', 'name')).toBe('ipamblock.edgemesh.io/10-244-9-0-24\n');
  });

  it('creates a List of nodes from stdin with client-side validation on', async () => {
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: ['list-1', 'list-2'].map((name) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name } })),
    };
    const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
      const child = execFile(
        KUBECTL,
        ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), 'create', '-f', '-'],
        { timeout: 30_000 },
        (err, out) => (err ? reject(err) : resolve({ stdout: out })),
      );
      child.stdin!.end(JSON.stringify(list));
    });
    expect(stdout).toBe('node/list-1 created\nnode/list-2 created\n');
    expect(
      await kubectl('delete', 'nodes', '-l', 'missing-label!=x', '--field-selector', 'metadata.name=list-1'),
    ).toContain('node "list-1" deleted');
    await kubectl('delete', 'node', 'list-2');
  });

  it('shows changes with get nodes --watch', async () => {
    const manifest = join(dir, 'node2.yaml');
    await writeFile(manifest, 'apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-2\n');
    await kubectl('create', '-f', manifest);
    const child = spawn(
      KUBECTL,
      [
        '--kubeconfig',
        kubeconfig,
        '--cache-dir',
        join(dir, 'cache'),
        'get',
        'nodes',
        '--watch',
        '--output-watch-events',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.add(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const waitFor = async (text: RegExp) => {
      const deadline = Date.now() + 15_000;
      while (!text.test(out)) {
        if (Date.now() > deadline) throw new Error(`kubectl --watch never printed "${text}"; got:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await waitFor(/^EVENT\s+NAME\s+STATUS/m);
      await waitFor(/^ADDED\s+edge-2\s/m);
      await kubectl('label', 'node', 'edge-2', 'node-role.kubernetes.io/worker=');
      await waitFor(/^MODIFIED\s+edge-2\s+NotReady\s+worker/m);
      await kubectl('delete', 'node', 'edge-2');
      await waitFor(/^DELETED\s+edge-2\s/m);
    } finally {
      child.kill('SIGTERM');
      children.delete(child);
    }
  });
});
