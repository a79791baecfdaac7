// Streaming watch: newline-delimited {"type","object"} events over a chunked HTTP response.
// Bounded: a client that does not read (socket buffer above the limit) is cut off and must
// re-watch from its last resourceVersion, as kube-apiserver does with slow watchers.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../../common/log.ts';
import { ApiError, badRequest } from './errors.ts';
import { apiVersionOf, type K8sObject, type ResourceDef } from './resources.ts';
import type { ChangeEvent, Store } from './store.ts';
import { renderTable } from './table.ts';

export type WatchRequest = {
  def: ResourceDef;
  version: string;
  namespace: string | undefined;
  resourceVersion: string | undefined;
  matches: (obj: K8sObject) => boolean;
  timeoutSeconds: number | undefined;
  allowBookmarks: boolean;
  sendInitialEvents: boolean;
  /** Set when the client asked for Table output (kubectl get --watch): the query it sent. */
  table: URLSearchParams | undefined;
};

export type WatchLimits = {
  /** Bytes queued for one watcher before it is disconnected. */
  maxBufferedBytes: number;
  bookmarkIntervalMs: number;
  /** Longest a watch stays open without a timeoutSeconds (the real default is 30-60 min). */
  maxTimeoutSeconds: number;
  /** Open watches at most; more are answered 429 TooManyRequests. */
  maxWatches: number;
};

type OutEvent = { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: unknown };

export function parseResourceVersion(rv: string | undefined): number | undefined {
  if (rv === undefined || rv === '' || rv === '0') return undefined;
  if (!/^[0-9]+$/.test(rv)) throw badRequest(`invalid resourceVersion "${rv}": must be a number`);
  return Number(rv);
}

/** Turns a change into what a watcher with a selector sees (a MODIFIED may enter or leave it). */
function visible(event: ChangeEvent, w: WatchRequest): OutEvent | undefined {
  const inNs = (o: K8sObject) => w.namespace === undefined || o.metadata.namespace === w.namespace;
  const now = inNs(event.object) && w.matches(event.object);
  if (event.type !== 'MODIFIED') return now ? { type: event.type, object: event.object } : undefined;
  const before = event.previous !== undefined && inNs(event.previous) && w.matches(event.previous);
  if (now && before) return { type: 'MODIFIED', object: event.object };
  if (now) return { type: 'ADDED', object: event.object };
  if (before) return { type: 'DELETED', object: event.object };
  return undefined;
}

function serialize(event: OutEvent, apiVersion: string, w: WatchRequest): string {
  let object = event.object;
  if (event.type !== 'ERROR' && event.type !== 'BOOKMARK') {
    const obj = { ...(event.object as K8sObject), apiVersion };
    object = w.table ? renderTable(w.def, [obj], w.table, obj.metadata.resourceVersion ?? '') : obj;
  }
  return `${JSON.stringify({ type: event.type, object })}\n`;
}

/** One serialization per change and event type, shared by every watcher (fan-out to N agents). */
const lines = new WeakMap<ChangeEvent, Map<string, string>>();

function sharedLine(change: ChangeEvent, type: OutEvent['type'], apiVersion: string): string {
  let byKey = lines.get(change);
  if (!byKey) {
    byKey = new Map();
    lines.set(change, byKey);
  }
  const key = `${type} ${apiVersion}`;
  let line = byKey.get(key);
  if (line === undefined) {
    line = `${JSON.stringify({ type, object: { ...change.object, apiVersion } })}\n`;
    byKey.set(key, line);
  }
  return line;
}

export function serveWatch(
  store: Store,
  w: WatchRequest,
  req: IncomingMessage,
  res: ServerResponse,
  limits: WatchLimits,
  log: Logger,
): void {
  const fromRv = parseResourceVersion(w.resourceVersion);
  const apiVersion = apiVersionOf(w.def.group, w.version);
  res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
  res.flushHeaders();

  let closed = false;
  let unsubscribe: () => void = () => {};
  let timeoutTimer: NodeJS.Timeout | undefined;
  let bookmarkTimer: NodeJS.Timeout | undefined;
  const finish = (why: string, abort = false) => {
    if (closed) return;
    closed = true;
    unsubscribe();
    clearTimeout(timeoutTimer);
    clearInterval(bookmarkTimer);
    log.debug({ resource: w.def.plural, why }, 'watch closed');
    // A stuck client is cut off at once so its queued bytes are freed, not flushed.
    if (abort) res.destroy();
    else res.end();
  };
  const send = (event: OutEvent, change?: ChangeEvent) => {
    if (closed) return;
    res.write(w.table || !change ? serialize(event, apiVersion, w) : sharedLine(change, event.type, apiVersion));
    if (res.writableLength > limits.maxBufferedBytes) finish('client too slow', true);
  };
  const bookmark = (annotations?: Record<string, string>) =>
    send({
      type: 'BOOKMARK',
      object: {
        kind: w.def.kind,
        apiVersion,
        metadata: { resourceVersion: store.currentRv(), ...(annotations ? { annotations } : {}) },
      },
    });

  req.on('close', () => finish('client closed'));
  res.on('error', () => finish('socket error'));

  if (fromRv === undefined || w.sendInitialEvents) {
    // "Start at most recent": the current state as synthetic ADDED events, then changes.
    const items = fromRv === undefined ? store.list(w.def, w.namespace, w.matches) : [];
    for (const obj of items) send({ type: 'ADDED', object: obj });
    if (w.sendInitialEvents) bookmark({ 'k8s.io/initial-events-end': 'true' });
  }
  try {
    unsubscribe = store.watch(w.def, fromRv ?? Number(store.currentRv()), (event) => {
      if (event === null) return finish('resource no longer served');
      const out = visible(event, w);
      if (out) send(out, event);
    });
  } catch (err) {
    if (err instanceof ApiError) {
      // An expired (410) or future (504) resourceVersion is reported in-stream, then the
      // stream ends; on 410 the client relists (client-go reflectors and client-node
      // informers both do).
      send({ type: 'ERROR', object: err.toStatus() });
      finish('expired');
      return;
    }
    throw err;
  }
  if (closed) return;
  const timeout = Math.min(w.timeoutSeconds ?? limits.maxTimeoutSeconds, limits.maxTimeoutSeconds);
  timeoutTimer = setTimeout(() => finish('timeout'), timeout * 1000);
  if (w.allowBookmarks) bookmarkTimer = setInterval(() => bookmark(), limits.bookmarkIntervalMs);
}
