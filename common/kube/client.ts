// The part of @kubernetes/client-node the agent uses — KubeConfig (kubeconfig files,
// in-cluster service account, auth plugins, TLS), Watch and ListWatch — without the rest.
// The package's entry point and its KubeConfig load every generated API class and model
// (about 75 MB of RSS in a process that starts at 42), and the agent needs none of them:
// its few REST calls are made here, with the same authentication and TLS as the library's
// own (KubeConfig.applySecurityAuthentication, undici, as client-node's Watch does).
//
// Imports inside client-node are redirected, each only for the modules named, to a module
// that exports exactly what those importers use (./slim/): KubeConfig takes
// createConfiguration and ServerConfiguration from the generated index, ListWatch
// serializes selector strings, KubeConfig, Watch and the generated HTTP helpers take two
// dispatchers and fetch from undici (as the agent's own requests here do), and KubeConfig's
// auth providers (oidc, azure, gcp) and proxy clients are loaded when a kubeconfig first
// needs them (the table: ./slim/redirects.ts). Every other importer — a test or tool that loads the whole package in the
// same process — still gets the real modules. A client-node upgrade that imports something
// more fails at load time ("does not provide an export named"), loudly.
import { registerHooks } from 'node:module';
import type { KubernetesObject } from '@kubernetes/client-node';
import type * as CacheModule from '@kubernetes/client-node/dist/cache.js';
import type * as ConfigModule from '@kubernetes/client-node/dist/config.js';
import type * as HttpModule from '@kubernetes/client-node/dist/gen/http/http.js';
import type * as WatchModule from '@kubernetes/client-node/dist/watch.js';
import type { Dispatcher } from 'undici';
import { clientNodeRedirects } from './slim/redirects.ts';

const redirects = new Map(clientNodeRedirects().map((r) => [`${r.importer}\0${r.specifier}`, r.target]));
registerHooks({
  resolve(specifier, context, nextResolve) {
    const url = redirects.get(`${context.parentURL}\0${specifier}`);
    return url ? { url, shortCircuit: true } : nextResolve(specifier, context);
  },
});

// Imported only now, after the hook is in place.
const [config, cache, watch, http, undici] = await Promise.all([
  import('@kubernetes/client-node/dist/config.js') as Promise<typeof ConfigModule>,
  import('@kubernetes/client-node/dist/cache.js') as Promise<typeof CacheModule>,
  import('@kubernetes/client-node/dist/watch.js') as Promise<typeof WatchModule>,
  import('@kubernetes/client-node/dist/gen/http/http.js') as Promise<typeof HttpModule>,
  import('./slim/undici.ts'),
]);

export const { KubeConfig } = config;
export type KubeConfig = ConfigModule.KubeConfig;
export const { ListWatch } = cache;
export type ListWatch<T extends KubernetesObject> = CacheModule.ListWatch<T>;
export const { Watch } = watch;
export type Watch = WatchModule.Watch;

/** An API request that failed: the HTTP status as `code` (as client-node's ApiException has it) and the body text. */
export class KubeApiError extends Error {
  readonly code: number;
  readonly body: string;
  constructor(method: string, path: string, code: number, body: string) {
    let reason = body;
    try {
      reason = (JSON.parse(body) as { message?: string }).message ?? body;
    } catch {
      // not a Status object: the text itself
    }
    super(`${method} ${path}: HTTP ${code}: ${reason.slice(0, 500)}`);
    this.name = 'KubeApiError';
    this.code = code;
    this.body = body;
  }
}

/**
 * Objects per list request (the API server's pagination: limit + continue). Small pages keep
 * each response body small: with pages of 500 kubelet Nodes (about 4.5 MB of JSON each) a
 * 5,000-node list left the process at 167-173 MB RSS after start-up, with 100 at 129 MB
 * (`node bench/control-plane.ts`, noisy): glibc keeps large freed buffers in its heap
 * once it has seen them, and a page that size is one.
 */
export const LIST_PAGE = 100;

export const MergePatch = 'application/merge-patch+json';
export const StrategicMergePatch = 'application/strategic-merge-patch+json';

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** Content-Type of the body (default application/json; patches name theirs). */
  contentType?: string;
}

/** Plain JSON requests against the API server of a KubeConfig's current context. */
export class KubeClient {
  readonly kubeconfig: KubeConfig;

  constructor(kubeconfig: KubeConfig) {
    this.kubeconfig = kubeconfig;
  }

  async request<T>(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path: string, opts: RequestOptions = {}): Promise<T> {
    const cluster = this.kubeconfig.getCurrentCluster();
    if (!cluster) throw new Error('No currently active cluster');
    const url = new URL(cluster.server + path);
    for (const [key, value] of Object.entries(opts.query ?? {}))
      if (value !== undefined) url.searchParams.set(key, String(value));
    const ctx = new http.RequestContext(url.toString(), method as HttpModule.HttpMethod);
    await this.kubeconfig.applySecurityAuthentication(ctx);
    const headers: Record<string, string> = { ...ctx.getHeaders(), Accept: 'application/json' };
    if (opts.body !== undefined) headers['Content-Type'] = opts.contentType ?? 'application/json';
    const response = await undici.fetch(url, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      dispatcher: ctx.getDispatcher() as Dispatcher | undefined,
    });
    const text = await response.text();
    if (response.status < 200 || response.status > 299) throw new KubeApiError(method, path, response.status, text);
    return (text ? JSON.parse(text) : undefined) as T;
  }
}
