// Shared set-up of the API test server tests: a server on loopback, a kubeconfig written by
// the server itself, and client-node API clients built from it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiException, CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { type ApiServer, type ApiServerOptions, startApiServer } from '../../../lab/kube-apiserver/server.ts';

export type Harness = {
  server: ApiServer;
  kc: KubeConfig;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  dir: string;
  close(): Promise<void>;
};

export async function startHarness(opts: ApiServerOptions = {}): Promise<Harness> {
  const server = await startApiServer({ host: '127.0.0.1', port: 0, ...opts });
  const dir = await mkdtemp(join(tmpdir(), 'kas-test-'));
  const kubeconfig = join(dir, 'kubeconfig');
  await server.writeKubeconfig(kubeconfig, 'tester');
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  return {
    server,
    kc,
    core: kc.makeApiClient(CoreV1Api),
    custom: kc.makeApiClient(CustomObjectsApi),
    dir,
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const IPAMBLOCK_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'ipamblocks.edgemesh.io' },
  spec: {
    group: 'edgemesh.io',
    scope: 'Cluster',
    names: { plural: 'ipamblocks', singular: 'ipamblock', kind: 'IPAMBlock', listKind: 'IPAMBlockList' },
    versions: [
      {
        name: 'v1alpha1',
        served: true,
        storage: true,
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                required: ['cidr', 'node'],
                properties: { cidr: { type: 'string' }, node: { type: 'string' } },
              },
            },
          },
        },
      },
    ],
  },
};

/** The HTTP status of a failed client-node call, and the Status body the server sent. */
export async function failure(p: Promise<unknown>): Promise<{ code: number; body: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException) {
      const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
      return { code: err.code, body: body as Record<string, unknown> };
    }
    throw err;
  }
  throw new Error('the call succeeded but a failure was expected');
}

/** A raw HTTP request (for what the typed clients cannot send: bad bodies, odd content types). */
export async function raw(
  server: ApiServer,
  method: string,
  path: string,
  body?: string,
  contentType = 'application/json',
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': contentType },
    body,
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

export function node(name: string, labels: Record<string, string> = {}) {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, labels }, spec: {} };
}
