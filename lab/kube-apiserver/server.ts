// The HTTP front of the Kubernetes API test server: routing of /api and /apis paths to the
// store, request bodies (bounded), patches, watches, Status errors, and the kubeconfig that
// points kubectl and @kubernetes/client-node at it. Plain HTTP, no authentication: it is a
// lab and test double, not a product.
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { type Logger, silentLogger } from '../../common/log.ts';
import { coreVersions, group, groupList, resourceList, versionInfo } from './discovery.ts';
import {
  ApiError,
  badRequest,
  invalid,
  methodNotAllowed,
  pathNotFound,
  tooLarge,
  unsupportedMediaType,
} from './errors.ts';
import { openApiV2, openApiV3Document, openApiV3Root } from './openapi.ts';
import { jsonPatch, mergePatch, strategicMergePatch } from './patch.ts';
import { apiVersionOf, fieldSelectorKeys, type K8sObject, type ResourceDef, selectableFields } from './resources.ts';
import { applySchema, type JsonSchema } from './schema.ts';
import { parseFieldSelector, parseLabelSelector } from './selectors.ts';
import { type DeleteOptions, Store } from './store.ts';
import { renderTable, wantsTable } from './table.ts';
import { serveWatch, type WatchLimits } from './watch.ts';

export type ApiServerOptions = {
  host?: string;
  port?: number;
  logger?: Logger;
  /** Changes kept per resource for watches; older resourceVersions get 410. */
  historyLimit?: number;
  /** Bytes of change history kept per resource (default 64 MiB). */
  historyMaxBytes?: number;
  /** Delay before dependents whose owners are all absent are garbage-collected (200 ms). */
  gcDelayMs?: number;
  /** Largest accepted request body (the real server's limit is 3 MiB). */
  maxBodyBytes?: number;
  /** The first resourceVersion (default: the clock in ms); a restored etcd starts lower than before. */
  initialResourceVersion?: number;
  watch?: Partial<WatchLimits>;
};

export type ApiServer = {
  url: string;
  port: number;
  /** Writes a kubeconfig for this server; `server` overrides the URL (e.g. the lab address). */
  writeKubeconfig(path: string, user?: string, server?: string): Promise<void>;
  close(): Promise<void>;
};

type Target = {
  def: ResourceDef;
  version: string;
  namespace: string | undefined;
  name: string | undefined;
  subresource: 'status' | undefined;
};

const JSON_TYPE = 'application/json';

export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const log = opts.logger ?? silentLogger();
  const store = new Store({
    historyLimit: opts.historyLimit ?? 1000,
    historyMaxBytes: opts.historyMaxBytes,
    gcDelayMs: opts.gcDelayMs,
    initialResourceVersion: opts.initialResourceVersion,
  });
  const maxBody = opts.maxBodyBytes ?? 3 * 1024 * 1024;
  const limits: WatchLimits = {
    maxBufferedBytes: 8 * 1024 * 1024,
    bookmarkIntervalMs: 60_000,
    maxTimeoutSeconds: 1800,
    maxWatches: 5000,
    ...opts.watch,
  };
  let openWatches = 0;
  let serverAddress = '';

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const apiErr =
        err instanceof ApiError
          ? err
          : new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error)?.message ?? err}`);
      if (apiErr.code >= 500) log.error({ err, method: req.method, url: req.url }, 'request failed');
      if (res.headersSent) {
        res.end();
        return;
      }
      if (apiErr.details?.retryAfterSeconds) res.setHeader('Retry-After', String(apiErr.details.retryAfterSeconds));
      sendJson(res, apiErr.code, apiErr.toStatus());
    });
  });
  // Watches are long-lived; the default request timeouts would cut them.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    log.debug({ method, path: url.pathname, query: url.search }, 'request');
    const segments = url.pathname
      .split('/')
      .filter((s) => s.length > 0)
      .map(decodeSegment);
    if (['/healthz', '/livez', '/readyz'].includes(url.pathname)) {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    if (url.pathname === '/openapi/v2') {
      const doc = openApiV2(req.headers.accept);
      res.writeHead(200, { 'Content-Type': doc.contentType, 'Content-Length': doc.body.length });
      res.end(doc.body);
      return;
    }
    const discovery = discoveryDocument(segments);
    if (discovery !== undefined) {
      if (method !== 'GET') throw methodNotAllowed(`${method} is not allowed on ${url.pathname}`);
      if (discovery === null) throw pathNotFound(url.pathname);
      // Aggregated discovery is not offered: a plain JSON reply makes clients fall back.
      sendJson(res, 200, discovery);
      return;
    }
    const target = resolve(segments);
    if (!target) throw pathNotFound(url.pathname);
    await serveResource(target, method, url.searchParams, req, res);
  }

  /** A discovery document, `null` for an unknown discovery path, `undefined` for a resource path. */
  function discoveryDocument(seg: string[]): object | null | undefined {
    const path = seg.join('/');
    if (path === 'version') return versionInfo();
    if (path === 'api') return coreVersions(serverAddress);
    if (path === 'api/v1') return resourceList(store.resources(), '', 'v1') ?? null;
    if (path === 'apis') return groupList(store.resources());
    if (seg[0] === 'apis' && seg.length === 2) return group(store.resources(), seg[1]!) ?? null;
    if (seg[0] === 'apis' && seg.length === 3) return resourceList(store.resources(), seg[1]!, seg[2]!) ?? null;
    if (path === 'openapi/v3') return openApiV3Root(store.resources());
    if (seg[0] === 'openapi' && seg[1] === 'v3')
      return openApiV3Document(store.resources(), seg.slice(2).join('/')) ?? null;
    if (seg[0] === 'openapi') return null;
    if (seg[0] !== 'api' && seg[0] !== 'apis') return null;
    return undefined;
  }

  function resolve(seg: string[]): Target | undefined {
    let groupName: string;
    let version: string;
    let rest: string[];
    if (seg[0] === 'api' && seg[1] === 'v1') {
      groupName = '';
      version = 'v1';
      rest = seg.slice(2);
    } else if (seg[0] === 'apis' && seg.length >= 4) {
      groupName = seg[1]!;
      version = seg[2]!;
      rest = seg.slice(3);
    } else return undefined;
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && rest[2] !== 'status' && rest[2] !== 'finalize') {
      namespace = rest[1]!;
      rest = rest.slice(2);
    }
    const [plural, name, sub, ...extra] = rest;
    if (!plural || extra.length > 0) return undefined;
    const def = store.resource(groupName, plural);
    if (!def?.versions.includes(version)) return undefined;
    if (namespace !== undefined && !def.namespaced) return undefined;
    if (namespace === undefined && def.namespaced && name !== undefined) return undefined;
    if (sub !== undefined && !(sub === 'status' && def.hasStatus)) return undefined;
    return { def, version, namespace, name, subresource: sub as 'status' | undefined };
  }

  async function serveResource(
    t: Target,
    method: string,
    q: URLSearchParams,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    const { def, namespace, name } = t;
    const apiVersion = apiVersionOf(def.group, t.version);
    const out = (code: number, obj: K8sObject) => sendJson(res, code, { ...obj, apiVersion });
    const admit = (obj: K8sObject) => admitCustomResource(def, t.version, obj, q, res);
    const dryRun = q.getAll('dryRun').includes('All');
    if (dryRun) throw badRequest('dryRun is not supported by this test server');

    if (method === 'GET' && name !== undefined) {
      const obj = store.get(def, namespace, name);
      if (wantsTable(req.headers.accept)) return sendJson(res, 200, renderTable(def, [obj], q, store.currentRv()));
      return out(200, obj);
    }
    if (method === 'GET') {
      const matches = selectorFor(def, q);
      if (isTrue(q.get('watch'))) {
        if (openWatches >= limits.maxWatches) {
          throw new ApiError(429, 'TooManyRequests', `too many open watches (${limits.maxWatches})`, {
            retryAfterSeconds: 1,
          });
        }
        openWatches++;
        res.once('close', () => openWatches--);
        return serveWatch(
          store,
          {
            def,
            version: t.version,
            namespace,
            resourceVersion: q.get('resourceVersion') ?? undefined,
            matches,
            timeoutSeconds: optionalInt(q, 'timeoutSeconds'),
            allowBookmarks: isTrue(q.get('allowWatchBookmarks')),
            sendInitialEvents: isTrue(q.get('sendInitialEvents')),
            table: wantsTable(req.headers.accept) ? q : undefined,
          },
          req,
          res,
          limits,
          log,
        );
      }
      return sendJson(res, 200, listResponse(def, t.version, namespace, matches, q, req));
    }
    if (method === 'POST') {
      if (name !== undefined) throw methodNotAllowed(`POST is not allowed on a named ${def.kind}`);
      const body = admit(checkKind(def, t.version, await readObject(req)));
      return out(201, store.create(def, namespace, body));
    }
    if (method === 'PUT') {
      if (name === undefined) throw methodNotAllowed(`PUT needs an object name`);
      const body = admit(checkKind(def, t.version, await readObject(req)));
      return out(200, store.update(def, namespace, name, body, t.subresource));
    }
    if (method === 'PATCH') {
      if (name === undefined) throw methodNotAllowed(`PATCH needs an object name`);
      const patched = await patch(t, name, req, admit);
      return out(patched.created ? 201 : 200, patched.object);
    }
    if (method === 'DELETE') {
      const options = await deleteOptions(req, q);
      if (name === undefined) {
        const matches = selectorFor(def, q);
        const deleted = store
          .list(def, namespace, matches)
          .map((o) => store.delete(def, o.metadata.namespace, o.metadata.name!, options));
        return sendJson(res, 200, {
          kind: def.listKind,
          apiVersion,
          metadata: { resourceVersion: store.currentRv() },
          items: deleted.map((o) => ({ ...o, apiVersion })),
        });
      }
      const deleted = store.delete(def, namespace, name, options);
      if (deleted.metadata.deletionTimestamp || def.crdName || def.plural === 'pods' || def.plural === 'namespaces') {
        return out(200, deleted);
      }
      return sendJson(res, 200, {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Success',
        details: { name, group: def.group, kind: def.plural, uid: deleted.metadata.uid },
      });
    }
    throw methodNotAllowed(`${method} is not supported`);
  }

  function selectorFor(def: ResourceDef, q: URLSearchParams): (o: K8sObject) => boolean {
    const labels = parseLabelSelector(q.get('labelSelector'));
    const fields = parseFieldSelector(q.get('fieldSelector'), fieldSelectorKeys(def));
    return (o) => labels(o.metadata.labels ?? {}) && fields(selectableFields(def, o));
  }

  function listResponse(
    def: ResourceDef,
    version: string,
    namespace: string | undefined,
    matches: (o: K8sObject) => boolean,
    q: URLSearchParams,
    req: IncomingMessage,
  ): object {
    const apiVersion = apiVersionOf(def.group, version);
    let items = store.list(def, namespace, matches);
    const rv = store.currentRv();
    const limit = optionalInt(q, 'limit');
    const token = q.get('continue');
    let after: string | undefined;
    if (token) {
      try {
        after = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')).after;
      } catch {
        throw badRequest('invalid continue token');
      }
      items = items.filter((o) => keyOf(o) > after!);
    }
    let next: string | undefined;
    let remaining: number | undefined;
    if (limit !== undefined && limit > 0 && items.length > limit) {
      remaining = items.length - limit;
      items = items.slice(0, limit);
      next = Buffer.from(JSON.stringify({ after: keyOf(items[items.length - 1]!) })).toString('base64url');
    }
    if (wantsTable(req.headers.accept)) {
      const table = renderTable(def, items, q, rv) as { metadata: Record<string, unknown> };
      if (next) table.metadata.continue = next;
      return table;
    }
    return {
      kind: def.listKind,
      apiVersion,
      metadata: { resourceVersion: rv, ...(next ? { continue: next, remainingItemCount: remaining } : {}) },
      items: items.map((o) => ({ ...o, apiVersion })),
    };
  }

  async function patch(
    t: Target,
    name: string,
    req: IncomingMessage,
    admit: (obj: K8sObject) => K8sObject,
  ): Promise<{ object: K8sObject; created: boolean }> {
    const { def, namespace } = t;
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
    const raw = await readBody(req);
    let body: unknown;
    if (contentType === 'application/apply-patch+yaml') body = parseBody(raw, 'yaml');
    else body = parseBody(raw, 'json');
    if (contentType === 'application/apply-patch+yaml') {
      // Server-side apply, approximated as "create, or merge-patch the given fields"
      // (no field ownership or apply conflicts).
      const obj = checkKind(def, t.version, asObject(body));
      try {
        store.get(def, namespace, name);
      } catch (err) {
        if (err instanceof ApiError && err.code === 404 && !t.subresource) {
          const object = store.create(def, namespace, admit({ ...obj, metadata: { ...obj.metadata, name } }));
          return { object, created: true };
        }
        throw err;
      }
    }
    const current = store.get(def, namespace, name);
    let patched: unknown;
    switch (contentType) {
      case 'application/merge-patch+json':
      case 'application/apply-patch+yaml':
        patched = mergePatch(current, body);
        break;
      case 'application/json-patch+json':
        patched = jsonPatch(current, body);
        break;
      case 'application/strategic-merge-patch+json':
        if (!def.strategicMerge) {
          throw new ApiError(
            415,
            'UnsupportedMediaType',
            `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`,
          );
        }
        patched = strategicMergePatch(current, body, def.strategicMerge);
        break;
      default:
        throw unsupportedMediaType(contentType);
    }
    return { object: store.update(def, namespace, name, admit(asObject(patched)), t.subresource), created: false };
  }

  async function deleteOptions(req: IncomingMessage, q: URLSearchParams): Promise<DeleteOptions> {
    const raw = await readBody(req);
    const body = raw.length > 0 ? (asObject(parseBody(raw, 'json')) as unknown as DeleteOptions) : {};
    const policy = q.get('propagationPolicy') ?? body.propagationPolicy;
    if (policy !== undefined && policy !== 'Orphan' && policy !== 'Background' && policy !== 'Foreground') {
      throw badRequest(`invalid propagationPolicy "${policy}"`);
    }
    return { propagationPolicy: policy, preconditions: body.preconditions };
  }

  async function readBody(req: IncomingMessage): Promise<Buffer> {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) {
      req.resume();
      throw tooLarge(maxBody);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBody) {
        req.resume();
        throw tooLarge(maxBody);
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }

  async function readObject(req: IncomingMessage): Promise<K8sObject> {
    const contentType = (req.headers['content-type'] ?? JSON_TYPE).split(';')[0]!.trim();
    const raw = await readBody(req);
    if (contentType === 'application/yaml') return asObject(parseBody(raw, 'yaml'));
    if (contentType !== JSON_TYPE && contentType !== '') throw unsupportedMediaType(contentType);
    return asObject(parseBody(raw, 'json'));
  }

  const httpServer = server;
  await new Promise<void>((resolveListen, rejectListen) => {
    httpServer.once('error', rejectListen);
    httpServer.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      httpServer.off('error', rejectListen);
      resolveListen();
    });
  });
  const address = httpServer.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const reachableHost = host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host;
  serverAddress = `${reachableHost}:${address.port}`;
  const url = `http://${serverAddress}`;
  log.info({ url }, 'kube-apiserver test double listening');

  return {
    url,
    port: address.port,
    async writeKubeconfig(path: string, user = 'lab-admin', server = url): Promise<void> {
      const config = {
        apiVersion: 'v1',
        kind: 'Config',
        // @kubernetes/client-node 2.x refuses an http:// server unless skipTLSVerify is set
        // ("HTTP protocol is not allowed when skipTLSVerify is not set or false"); kubectl
        // accepts it too. There is no TLS to verify on this plain-HTTP test server.
        clusters: [{ name: 'edgemesh-lab', cluster: { server, 'insecure-skip-tls-verify': true } }],
        users: [{ name: user, user: { token: user } }],
        contexts: [{ name: 'edgemesh-lab', context: { cluster: 'edgemesh-lab', user } }],
        'current-context': 'edgemesh-lab',
      };
      await writeFile(path, toYaml(config), { mode: 0o600 });
    },
    close(): Promise<void> {
      store.close();
      return new Promise((resolveClose) => {
        httpServer.close(() => resolveClose());
        httpServer.closeAllConnections();
      });
    },
  };
}

/**
 * Custom resources go through their CRD's schema: pruning, then validation. Unknown fields
 * are refused with fieldValidation=Strict (kubectl's default), dropped with a Warning header
 * otherwise, as kube-apiserver does.
 */
function admitCustomResource(
  def: ResourceDef,
  version: string,
  obj: K8sObject,
  q: URLSearchParams,
  res: ServerResponse,
): K8sObject {
  const schema = def.schemas?.[version];
  if (!def.crdName || !schema) return obj;
  const result = applySchema(schema as JsonSchema, obj);
  const directive = q.get('fieldValidation') ?? 'Warn';
  if (result.unknown.length > 0 && directive === 'Strict') {
    throw badRequest(`strict decoding error: ${result.unknown.map((f) => `unknown field "${f}"`).join(', ')}`);
  }
  if (result.unknown.length > 0 && directive !== 'Ignore') {
    res.setHeader(
      'Warning',
      result.unknown.map((f) => `299 - ${JSON.stringify(`unknown field "${f}"`)}`),
    );
  }
  if (result.causes.length > 0) {
    throw invalid(
      { group: def.group, plural: def.plural, kind: `${def.kind}.${def.group}` },
      obj.metadata.name ?? '',
      result.causes,
    );
  }
  return result.value as K8sObject;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw badRequest(`malformed path segment "${segment}"`);
  }
}

function keyOf(o: K8sObject): string {
  return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

function isTrue(v: string | null): boolean {
  return v === '1' || v === 'true';
}

function optionalInt(q: URLSearchParams, key: string): number | undefined {
  const v = q.get(key);
  if (v === null || v === '') return undefined;
  if (!/^[0-9]+$/.test(v)) throw badRequest(`invalid ${key} "${v}": must be a non-negative integer`);
  return Number(v);
}

function parseBody(raw: Buffer, format: 'json' | 'yaml'): unknown {
  if (raw.length === 0) throw badRequest('the request body is empty');
  try {
    return format === 'json' ? JSON.parse(raw.toString('utf8')) : parseYaml(raw.toString('utf8'));
  } catch (err) {
    throw badRequest(`the request body is not valid ${format.toUpperCase()}: ${(err as Error).message}`);
  }
}

function asObject(v: unknown): K8sObject {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw badRequest('the request body must be a JSON object');
  const obj = v as K8sObject;
  if (obj.metadata === undefined) obj.metadata = {};
  if (typeof obj.metadata !== 'object' || obj.metadata === null || Array.isArray(obj.metadata)) {
    throw badRequest('metadata must be an object');
  }
  return obj;
}

function checkKind(def: ResourceDef, version: string, obj: K8sObject): K8sObject {
  const expected = apiVersionOf(def.group, version);
  if (obj.apiVersion !== undefined && obj.apiVersion !== expected) {
    throw badRequest(
      `the API version in the data (${obj.apiVersion}) does not match the expected API version (${expected})`,
    );
  }
  if (obj.kind !== undefined && obj.kind !== def.kind) {
    throw badRequest(`the kind in the data (${obj.kind}) does not match the expected kind (${def.kind})`);
  }
  return obj;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
