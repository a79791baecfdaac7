// The object store: one global resourceVersion counter (like etcd's revision), collections
// of objects per resource, a bounded per-resource history of changes for watches, and the
// owner-reference garbage collector. Single-threaded JS makes every operation atomic, so a
// create is the name lock IPAM relies on: of 50 concurrent creates exactly one wins.
import { randomUUID } from 'node:crypto';
import { ApiError, alreadyExists, conflict, gone, invalid, notFound } from './errors.ts';
import {
  apiVersionOf,
  builtinResources,
  type K8sObject,
  type OwnerReference,
  type ResourceDef,
  resourceFromCrd,
  resourceKey,
} from './resources.ts';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One change in a collection, kept in the history window and fanned out to watchers. */
export type ChangeEvent = {
  type: EventType;
  rv: number;
  /** Approximate size (JSON length), for the history's byte bound. */
  size?: number;
  object: K8sObject;
  /** The object before a MODIFIED change, so selector watches can turn it into ADDED/DELETED. */
  previous?: K8sObject;
};

/** Receives each change, or `null` when the resource stops being served (its CRD was deleted). */
export type WatchSubscriber = (event: ChangeEvent | null) => void;

export type DeleteOptions = {
  propagationPolicy?: 'Orphan' | 'Background' | 'Foreground';
  preconditions?: { uid?: string; resourceVersion?: string };
};

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

function now(): string {
  return `${new Date().toISOString().slice(0, 19)}Z`;
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

class Collection {
  readonly def: ResourceDef;
  readonly objects = new Map<string, K8sObject>();
  readonly history: ChangeEvent[] = [];
  /** Approximate bytes held by `history` (JSON length of each event's object). */
  historyBytes = 0;
  /** Changes at or below this resourceVersion have left the window: older watches get 410. */
  floorRv = 0;
  readonly subscribers = new Set<WatchSubscriber>();

  constructor(def: ResourceDef, floorRv: number) {
    this.def = def;
    this.floorRv = floorRv;
  }
}

function objectKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

export type StoreOptions = {
  historyLimit?: number;
  /** Bytes of history kept per resource at most (default 64 MiB), whatever the count. */
  historyMaxBytes?: number;
  /**
   * Where the resourceVersion counter starts. The default, the start time in milliseconds,
   * keeps resourceVersions increasing across restarts of the lab's server (as etcd's revision
   * survives kube-apiserver restarts), so a client still holding a resourceVersion from an
   * earlier instance gets 410 Gone and relists instead of silently missing changes.
   */
  initialResourceVersion?: number;
  /**
   * How long after a write the garbage collector looks at an object whose owners are all
   * absent (e.g. created with a stale owner uid) and deletes it. The real collector is
   * asynchronous too; 200 ms by default.
   */
  gcDelayMs?: number;
};

export class Store {
  private rv: number;
  private readonly collections = new Map<string, Collection>();
  private readonly historyLimit: number;
  private readonly historyMaxBytes: number;
  /** Every live object by uid, for owner lookups in garbage collection. */
  private readonly byUid = new Map<string, { key: string; objectKey: string }>();
  private readonly gcDelayMs: number;
  private readonly gcTimers = new Set<NodeJS.Timeout>();

  constructor(opts: StoreOptions = {}) {
    this.historyLimit = opts.historyLimit ?? 1000;
    this.historyMaxBytes = opts.historyMaxBytes ?? 64 * 1024 * 1024;
    this.rv = opts.initialResourceVersion ?? Date.now();
    this.gcDelayMs = opts.gcDelayMs ?? 200;
    for (const def of builtinResources()) {
      this.collections.set(resourceKey(def.group, def.plural), new Collection(def, this.rv));
    }
    for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
      this.create(this.resource('', 'namespaces')!, undefined, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: ns },
        spec: { finalizers: ['kubernetes'] },
        status: { phase: 'Active' },
      });
    }
  }

  currentRv(): string {
    return String(this.rv);
  }

  resources(): ResourceDef[] {
    return [...this.collections.values()].map((c) => c.def);
  }

  resource(group: string, plural: string): ResourceDef | undefined {
    return this.collections.get(resourceKey(group, plural))?.def;
  }

  private collection(def: ResourceDef): Collection {
    const c = this.collections.get(resourceKey(def.group, def.plural));
    if (!c) throw notFound({ group: def.group, plural: def.plural, kind: def.kind }, '');
    return c;
  }

  // --- reads ------------------------------------------------------------------------------

  get(def: ResourceDef, namespace: string | undefined, name: string): K8sObject {
    const obj = this.collection(def).objects.get(objectKey(namespace, name));
    if (!obj) throw notFound(def, name);
    return clone(obj);
  }

  list(def: ResourceDef, namespace: string | undefined, filter: (o: K8sObject) => boolean): K8sObject[] {
    const items: K8sObject[] = [];
    for (const obj of this.collection(def).objects.values()) {
      if (namespace !== undefined && obj.metadata.namespace !== namespace) continue;
      if (filter(obj)) items.push(clone(obj));
    }
    items.sort((a, b) =>
      objectKey(a.metadata.namespace, a.metadata.name!).localeCompare(
        objectKey(b.metadata.namespace, b.metadata.name!),
      ),
    );
    return items;
  }

  // --- writes -----------------------------------------------------------------------------

  create(def: ResourceDef, namespace: string | undefined, body: K8sObject): K8sObject {
    const c = this.collection(def);
    const obj = clone(body);
    obj.metadata ??= {};
    const meta = obj.metadata;
    if (!meta.name && meta.generateName) meta.name = this.generateName(c, namespace, meta.generateName);
    const name = meta.name ?? '';
    this.validateMeta(def, namespace, obj);
    if (def.namespaced && !this.collections.get('/namespaces')!.objects.has(objectKey(undefined, namespace!))) {
      throw notFound({ group: '', plural: 'namespaces', kind: 'Namespace' }, namespace!);
    }
    const key = objectKey(namespace, name);
    if (c.objects.has(key)) throw alreadyExists(def, name);
    if (def.crdName) this.resetStatusOnCreate(def, obj);
    if (def === this.resource('apiextensions.k8s.io', 'customresourcedefinitions')) this.installCrd(obj);
    obj.apiVersion = apiVersionOf(def.group, def.versions[0]!);
    obj.kind = def.kind;
    if (def.namespaced) meta.namespace = namespace;
    else delete meta.namespace;
    meta.uid = randomUUID();
    meta.creationTimestamp = now();
    meta.generation = 1;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    meta.resourceVersion = String(++this.rv);
    c.objects.set(key, obj);
    this.byUid.set(meta.uid, { key: resourceKey(def.group, def.plural), objectKey: key });
    this.record(c, { type: 'ADDED', rv: this.rv, object: obj });
    this.scheduleAbsentOwnerCheck(c, key, meta.uid);
    return clone(obj);
  }

  /** Stops the garbage collector's pending checks (when the server closes). */
  close(): void {
    for (const t of this.gcTimers) clearTimeout(t);
    this.gcTimers.clear();
  }

  /**
   * The garbage collector also deletes a dependent whose owners do not exist (by uid) at all,
   * e.g. an IPAMBlock created with the uid of a Node that has since been re-created.
   */
  private scheduleAbsentOwnerCheck(c: Collection, key: string, uid: string): void {
    if ((c.objects.get(key)?.metadata.ownerReferences ?? []).length === 0) return;
    const timer = setTimeout(() => {
      this.gcTimers.delete(timer);
      const obj = c.objects.get(key);
      const refs = obj?.metadata.ownerReferences ?? [];
      if (!obj || obj.metadata.uid !== uid || refs.length === 0) return;
      if (refs.some((r) => this.byUid.has(r.uid))) return;
      if (this.collections.get(resourceKey(c.def.group, c.def.plural)) !== c) return;
      this.delete(c.def, obj.metadata.namespace, obj.metadata.name!, { propagationPolicy: 'Background' });
    }, this.gcDelayMs);
    timer.unref();
    this.gcTimers.add(timer);
  }

  /**
   * Replaces an object (PUT, or the result of a PATCH). A resourceVersion in the body that is
   * not the current one is a 409 Conflict; an empty one means "unconditional" as in Kubernetes.
   */
  update(
    def: ResourceDef,
    namespace: string | undefined,
    name: string,
    body: K8sObject,
    subresource?: 'status',
  ): K8sObject {
    const c = this.collection(def);
    const key = objectKey(namespace, name);
    const current = c.objects.get(key);
    if (!current) throw notFound(def, name);
    if (!body.metadata || typeof body.metadata !== 'object')
      throw invalid(def, name, [{ field: 'metadata', message: 'Required value' }]);
    if (body.metadata.name !== undefined && body.metadata.name !== name) {
      throw new ApiError(
        400,
        'BadRequest',
        `the name of the object (${body.metadata.name}) does not match the name on the URL (${name})`,
      );
    }
    const wantedRv = body.metadata.resourceVersion;
    if (wantedRv && wantedRv !== current.metadata.resourceVersion) {
      throw conflict(
        def,
        name,
        'the object has been modified; please apply your changes to the latest version and try again',
      );
    }
    if (body.metadata.uid && body.metadata.uid !== current.metadata.uid) {
      throw conflict(
        def,
        name,
        `Precondition failed: UID in precondition: ${body.metadata.uid}, UID in object meta: ${current.metadata.uid}`,
      );
    }
    let next: K8sObject;
    if (subresource === 'status') {
      // The status endpoint changes status only (and metadata is left as it was).
      next = clone(current);
      if (body.status === undefined) delete next.status;
      else next.status = clone(body.status);
    } else {
      next = clone(body);
      if (def.hasStatus) {
        if (current.status === undefined) delete next.status;
        else next.status = clone(current.status);
      }
      // Fields the server owns cannot be changed by a client.
      next.metadata.name = name;
      next.metadata.uid = current.metadata.uid;
      next.metadata.creationTimestamp = current.metadata.creationTimestamp;
      next.metadata.generation = current.metadata.generation;
      if (current.metadata.deletionTimestamp) {
        next.metadata.deletionTimestamp = current.metadata.deletionTimestamp;
        next.metadata.deletionGracePeriodSeconds = current.metadata.deletionGracePeriodSeconds;
      } else {
        delete next.metadata.deletionTimestamp;
        delete next.metadata.deletionGracePeriodSeconds;
      }
      if (def.namespaced) next.metadata.namespace = namespace;
      else delete next.metadata.namespace;
      this.validateMeta(def, namespace, next);
      if (def === this.resource('apiextensions.k8s.io', 'customresourcedefinitions')) this.installCrd(next, current);
    }
    next.apiVersion = current.apiVersion;
    next.kind = current.kind;
    if (specChanged(current, next)) next.metadata.generation = (current.metadata.generation ?? 1) + 1;
    if (
      canonicalJson({ ...next, metadata: { ...next.metadata, resourceVersion: '' } }) ===
      canonicalJson({ ...current, metadata: { ...current.metadata, resourceVersion: '' } })
    ) {
      // A no-op write keeps the resourceVersion and sends no watch event, like the real server.
      return clone(current);
    }
    next.metadata.resourceVersion = String(++this.rv);
    if (next.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0) {
      // The last finalizer went away: the pending deletion completes now.
      c.objects.delete(key);
      this.byUid.delete(next.metadata.uid!);
      this.record(c, { type: 'DELETED', rv: this.rv, object: next });
      this.afterDelete(def, next, 'Background');
      return clone(next);
    }
    c.objects.set(key, next);
    this.record(c, { type: 'MODIFIED', rv: this.rv, object: next, previous: current });
    this.scheduleAbsentOwnerCheck(c, key, next.metadata.uid!);
    return clone(next);
  }

  delete(def: ResourceDef, namespace: string | undefined, name: string, opts: DeleteOptions = {}): K8sObject {
    const c = this.collection(def);
    const key = objectKey(namespace, name);
    const current = c.objects.get(key);
    if (!current) throw notFound(def, name);
    const pre = opts.preconditions ?? {};
    if (pre.uid && pre.uid !== current.metadata.uid) {
      throw conflict(
        def,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`,
      );
    }
    if (pre.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion) {
      throw conflict(
        def,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`,
      );
    }
    if ((current.metadata.finalizers ?? []).length > 0) {
      // With finalizers the object only gets a deletionTimestamp; whoever owns the finalizer
      // removes it and that update completes the deletion.
      if (current.metadata.deletionTimestamp) return clone(current);
      const next = clone(current);
      next.metadata.deletionTimestamp = now();
      next.metadata.deletionGracePeriodSeconds = 0;
      next.metadata.resourceVersion = String(++this.rv);
      c.objects.set(key, next);
      this.record(c, { type: 'MODIFIED', rv: this.rv, object: next, previous: current });
      return clone(next);
    }
    c.objects.delete(key);
    this.byUid.delete(current.metadata.uid!);
    // The DELETED event carries a new resourceVersion, as etcd's delete revision does.
    const gone = clone(current);
    gone.metadata.resourceVersion = String(++this.rv);
    this.record(c, { type: 'DELETED', rv: this.rv, object: gone });
    this.afterDelete(def, gone, opts.propagationPolicy ?? 'Background');
    return clone(gone);
  }

  // --- watch ------------------------------------------------------------------------------

  /**
   * Subscribes to changes after `fromRv` (replayed from the history window first).
   * Throws 410 Expired when `fromRv` is older than the window, as kube-apiserver does.
   */
  watch(def: ResourceDef, fromRv: number, subscriber: WatchSubscriber): () => void {
    const c = this.collection(def);
    if (fromRv < c.floorRv) {
      throw gone(`too old resource version: ${fromRv} (${c.floorRv + 1})`);
    }
    if (fromRv > this.rv) {
      throw new ApiError(504, 'Timeout', `Too large resource version: ${fromRv}, current: ${this.rv}`, {
        causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
        retryAfterSeconds: 1,
      });
    }
    for (const event of c.history) if (event.rv > fromRv) subscriber(event);
    c.subscribers.add(subscriber);
    return () => c.subscribers.delete(subscriber);
  }

  /** Ends every watch of a resource (when its CRD goes away). */
  private closeWatches(c: Collection): void {
    for (const s of [...c.subscribers]) s(null);
    c.subscribers.clear();
  }

  private record(c: Collection, event: ChangeEvent): void {
    event.size = JSON.stringify(event.object).length;
    c.history.push(event);
    c.historyBytes += event.size;
    let drop = Math.max(0, c.history.length - this.historyLimit);
    let bytes = c.historyBytes;
    for (let i = 0; i < drop; i++) bytes -= c.history[i]!.size!;
    while (bytes > this.historyMaxBytes && drop < c.history.length - 1) bytes -= c.history[drop++]!.size!;
    if (drop > 0) {
      const dropped = c.history.splice(0, drop);
      c.historyBytes = bytes;
      c.floorRv = dropped[dropped.length - 1]!.rv;
    }
    for (const s of [...c.subscribers]) s(event);
  }

  // --- internals --------------------------------------------------------------------------

  private generateName(c: Collection, namespace: string | undefined, prefix: string): string {
    for (;;) {
      let suffix = '';
      for (let i = 0; i < 5; i++) suffix += GENERATE_ALPHABET[Math.floor(Math.random() * GENERATE_ALPHABET.length)];
      const name = `${prefix}${suffix}`;
      if (!c.objects.has(objectKey(namespace, name))) return name;
    }
  }

  private validateMeta(def: ResourceDef, namespace: string | undefined, obj: K8sObject): void {
    const name = obj.metadata.name ?? '';
    const causes: { field: string; message: string; reason?: string }[] = [];
    if (!name)
      causes.push({
        field: 'metadata.name',
        message: 'Required value: name or generateName is required',
        reason: 'FieldValueRequired',
      });
    else {
      const re = def.plural === 'namespaces' ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
      const limit = def.plural === 'namespaces' ? 63 : 253;
      if (!re.test(name) || name.length > limit) {
        causes.push({
          field: 'metadata.name',
          message: `Invalid value: "${name}": a lowercase RFC 1123 ${def.plural === 'namespaces' ? 'label' : 'subdomain'} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
        });
      }
    }
    if (obj.metadata.namespace !== undefined && def.namespaced && obj.metadata.namespace !== namespace) {
      throw new ApiError(
        400,
        'BadRequest',
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    }
    for (const [field, map] of [
      ['labels', obj.metadata.labels],
      ['annotations', obj.metadata.annotations],
    ] as const) {
      if (map === undefined || map === null) continue;
      if (typeof map !== 'object' || Array.isArray(map)) {
        causes.push({ field: `metadata.${field}`, message: 'must be a map of string to string' });
        continue;
      }
      for (const [k, v] of Object.entries(map)) {
        if (typeof v !== 'string')
          causes.push({ field: `metadata.${field}`, message: `value of "${k}" must be a string` });
        else if (field === 'labels' && (v.length > 63 || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v))) {
          causes.push({
            field: `metadata.labels`,
            message: `Invalid value: "${v}": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'`,
          });
        }
      }
    }
    for (const [i, ref] of (obj.metadata.ownerReferences ?? []).entries()) {
      if (!ref || typeof ref.uid !== 'string' || !ref.uid || !ref.name || !ref.kind || !ref.apiVersion) {
        causes.push({
          field: `metadata.ownerReferences[${i}]`,
          message: 'apiVersion, kind, name and uid are required',
        });
      }
    }
    if (causes.length > 0) throw invalid(def, name, causes);
  }

  private resetStatusOnCreate(def: ResourceDef, obj: K8sObject): void {
    if (def.hasStatus) delete obj.status;
  }

  /** Creating or updating a CRD serves its resource; its status says so, as the real one does. */
  private installCrd(crd: K8sObject, previous?: K8sObject): void {
    const def = resourceFromCrd(crd);
    const key = resourceKey(def.group, def.plural);
    const existing = this.collections.get(key);
    if (existing && existing.def.crdName !== crd.metadata.name) {
      throw invalid(
        { group: 'apiextensions.k8s.io', plural: 'customresourcedefinitions', kind: 'CustomResourceDefinition' },
        crd.metadata.name ?? '',
        [{ field: 'spec.names.plural', message: `"${def.plural}" in group "${def.group}" is already served` }],
      );
    }
    if (previous && existing) {
      (existing as { def: ResourceDef }).def = def;
    } else {
      this.collections.set(key, new Collection(def, this.rv));
    }
    const spec = crd.spec as { names?: unknown };
    const kept = (previous?.status as { conditions?: unknown } | undefined)?.conditions;
    crd.status = {
      conditions: kept ?? [
        {
          type: 'NamesAccepted',
          status: 'True',
          reason: 'NoConflicts',
          message: 'no conflicts found',
          lastTransitionTime: now(),
        },
        {
          type: 'Established',
          status: 'True',
          reason: 'InitialNamesAccepted',
          message: 'the initial names have been accepted',
          lastTransitionTime: now(),
        },
      ],
      acceptedNames: clone(spec.names),
      storedVersions: [def.versions[0]],
    };
  }

  private afterDelete(def: ResourceDef, obj: K8sObject, policy: DeleteOptions['propagationPolicy']): void {
    if (def === this.resource('apiextensions.k8s.io', 'customresourcedefinitions')) {
      // Deleting a CRD deletes all its objects and stops serving the resource.
      const served = resourceFromCrd(obj);
      const key = resourceKey(served.group, served.plural);
      const c = this.collections.get(key);
      if (c) {
        for (const o of c.objects.values()) this.byUid.delete(o.metadata.uid!);
        this.closeWatches(c);
        this.collections.delete(key);
      }
    }
    if (def.plural === 'namespaces' && def.group === '') {
      // The namespace controller's job: a deleted namespace takes its objects with it.
      for (const c of [...this.collections.values()]) {
        if (!c.def.namespaced) continue;
        for (const o of [...c.objects.values()]) {
          if (
            o.metadata.namespace === obj.metadata.name &&
            c.objects.has(objectKey(o.metadata.namespace, o.metadata.name!))
          ) {
            this.delete(c.def, o.metadata.namespace, o.metadata.name!, { propagationPolicy: 'Background' });
          }
        }
      }
    }
    this.collectDependents(obj.metadata.uid!, policy);
  }

  /**
   * The garbage collector: dependents whose owners are all gone are deleted (Background or
   * Foreground); with Orphan the owner reference is removed instead.
   */
  private collectDependents(ownerUid: string, policy: DeleteOptions['propagationPolicy']): void {
    for (const c of [...this.collections.values()]) {
      for (const dep of [...c.objects.values()]) {
        const refs: OwnerReference[] = dep.metadata.ownerReferences ?? [];
        if (!refs.some((r) => r.uid === ownerUid)) continue;
        const ns = dep.metadata.namespace;
        const name = dep.metadata.name!;
        if (!c.objects.has(objectKey(ns, name))) continue;
        const remaining = refs.filter((r) => r.uid !== ownerUid);
        if (policy === 'Orphan' || remaining.some((r) => this.byUid.has(r.uid))) {
          const next = clone(dep);
          next.metadata.ownerReferences = remaining;
          if (remaining.length === 0) delete next.metadata.ownerReferences;
          next.metadata.resourceVersion = '';
          this.update(c.def, ns, name, next, undefined);
        } else {
          this.delete(c.def, ns, name, { propagationPolicy: 'Background' });
        }
      }
    }
  }
}

/** JSON with object keys sorted, so that key order does not make two equal objects differ. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : v,
  );
}

/** Whether anything besides metadata and status changed (which bumps metadata.generation). */
function specChanged(a: K8sObject, b: K8sObject): boolean {
  const strip = (o: K8sObject) => {
    const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = o;
    return canonicalJson(rest);
  };
  return strip(a) !== strip(b);
}
