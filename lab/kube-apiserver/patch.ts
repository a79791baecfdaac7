// The three patch formats kubectl and client-node send: JSON merge patch (RFC 7386),
// JSON patch (RFC 6902) and Kubernetes' strategic merge patch (lists merged by a key
// declared per field, e.g. Node status.conditions by `type`).
import { ApiError, badRequest } from './errors.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

/** RFC 7386: objects merge recursively, null deletes, everything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const result: JsonObject = isObject(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value) as Json;
  }
  return result;
}

// --- RFC 6902 ---------------------------------------------------------------------------

type Operation = { op: string; path: string; value?: unknown; from?: string };

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw badRequest(`invalid JSON pointer "${pointer}"`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function unprocessable(message: string): ApiError {
  return new ApiError(422, 'Invalid', message);
}

function parentOf(doc: unknown, tokens: string[], pointer: string): { parent: JsonObject | Json[]; key: string } {
  let node: unknown = doc;
  for (const token of tokens.slice(0, -1)) {
    if (Array.isArray(node)) node = node[Number(token)];
    else if (isObject(node)) node = node[token];
    else node = undefined;
    if (node === undefined) throw unprocessable(`jsonpatch: path "${pointer}" does not exist`);
  }
  if (!Array.isArray(node) && !isObject(node)) throw unprocessable(`jsonpatch: path "${pointer}" does not exist`);
  return { parent: node, key: tokens[tokens.length - 1]! };
}

function arrayIndex(arr: unknown[], key: string, pointer: string, forInsert: boolean): number {
  if (forInsert && key === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(key)) throw unprocessable(`jsonpatch: invalid array index in "${pointer}"`);
  const idx = Number(key);
  if (idx > arr.length || (!forInsert && idx === arr.length)) {
    throw unprocessable(`jsonpatch: array index out of range in "${pointer}"`);
  }
  return idx;
}

function getAt(doc: unknown, pointer: string): unknown {
  let node: unknown = doc;
  for (const token of parsePointer(pointer)) {
    if (Array.isArray(node)) node = node[Number(token)];
    else if (isObject(node)) node = node[token];
    else node = undefined;
    if (node === undefined) throw unprocessable(`jsonpatch: path "${pointer}" does not exist`);
  }
  return node;
}

function removeAt(doc: unknown, pointer: string): unknown {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) throw unprocessable('jsonpatch: cannot remove the document root');
  const { parent, key } = parentOf(doc, tokens, pointer);
  if (Array.isArray(parent)) {
    const idx = arrayIndex(parent, key, pointer, false);
    return parent.splice(idx, 1)[0];
  }
  if (!(key in parent)) throw unprocessable(`jsonpatch: path "${pointer}" does not exist`);
  const old = parent[key];
  delete parent[key];
  return old;
}

function addAt(doc: unknown, pointer: string, value: unknown): unknown {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return clone(value);
  const { parent, key } = parentOf(doc, tokens, pointer);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, pointer, true), 0, clone(value) as Json);
  else parent[key] = clone(value) as Json;
  return doc;
}

export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest('a JSON patch must be an array of operations');
  let doc = clone(target);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw badRequest(`invalid JSON patch operation: ${JSON.stringify(raw)}`);
    }
    const op = raw as unknown as Operation;
    switch (op.op) {
      case 'add':
        doc = addAt(doc, op.path, op.value);
        break;
      case 'remove':
        removeAt(doc, op.path);
        break;
      case 'replace':
        getAt(doc, op.path);
        if (op.path === '') doc = clone(op.value);
        else {
          removeAt(doc, op.path);
          doc = addAt(doc, op.path, op.value);
        }
        break;
      case 'move': {
        if (typeof op.from !== 'string') throw badRequest('jsonpatch move: "from" missing');
        const value = removeAt(doc, op.from);
        doc = addAt(doc, op.path, value);
        break;
      }
      case 'copy':
        if (typeof op.from !== 'string') throw badRequest('jsonpatch copy: "from" missing');
        doc = addAt(doc, op.path, getAt(doc, op.from));
        break;
      case 'test':
        if (JSON.stringify(getAt(doc, op.path)) !== JSON.stringify(op.value)) {
          throw unprocessable(`jsonpatch: test failed at "${op.path}"`);
        }
        break;
      default:
        throw badRequest(`unknown JSON patch operation "${op.op}"`);
    }
  }
  return doc;
}

// --- strategic merge patch --------------------------------------------------------------

/**
 * How a list field merges, by dotted path from the object root: `{ mergeKey: 'type' }` merges
 * list items with the same key, `'primitive'` unions primitive values; any other list is
 * replaced, as for fields without a patchStrategy in the Kubernetes types.
 */
export type ListStrategy = { mergeKey: string } | 'primitive';
export type PatchSchema = Record<string, ListStrategy>;

const DIRECTIVE = '$patch';
const DELETE_FROM_PRIMITIVE = '$deleteFromPrimitiveList/';
const SET_ELEMENT_ORDER = '$setElementOrder/';
const RETAIN_KEYS = '$retainKeys';

export function strategicMergePatch(target: unknown, patch: unknown, schema: PatchSchema): unknown {
  return smpValue(target, patch, schema, '');
}

function smpValue(target: unknown, patch: unknown, schema: PatchSchema, path: string): unknown {
  if (!isObject(patch)) return clone(patch);
  if (patch[DIRECTIVE] === 'replace') {
    const { [DIRECTIVE]: _, ...rest } = patch;
    return clone(rest);
  }
  if (patch[DIRECTIVE] === 'delete') return undefined;
  const result: JsonObject = isObject(target) ? clone(target) : {};
  const retainKeys = Array.isArray(patch[RETAIN_KEYS]) ? (patch[RETAIN_KEYS] as string[]) : undefined;
  for (const [key, value] of Object.entries(patch)) {
    if (key === DIRECTIVE || key === RETAIN_KEYS || key.startsWith(SET_ELEMENT_ORDER)) continue;
    if (key.startsWith(DELETE_FROM_PRIMITIVE)) {
      const field = key.slice(DELETE_FROM_PRIMITIVE.length);
      const current = result[field];
      if (Array.isArray(current) && Array.isArray(value)) {
        const drop = new Set(value.map((v) => JSON.stringify(v)));
        result[field] = current.filter((v) => !drop.has(JSON.stringify(v)));
      }
      continue;
    }
    const childPath = path ? `${path}.${key}` : key;
    if (value === null) {
      delete result[key];
      continue;
    }
    const strategy = schema[childPath];
    if (Array.isArray(value) && strategy) {
      result[key] = mergeList(result[key], value, strategy, schema, childPath) as Json;
      continue;
    }
    const merged = smpValue(result[key], value, schema, childPath);
    if (merged === undefined) delete result[key];
    else result[key] = merged as Json;
  }
  if (retainKeys) {
    for (const key of Object.keys(result)) if (!retainKeys.includes(key)) delete result[key];
  }
  return result;
}

function mergeList(current: unknown, patch: Json[], strategy: ListStrategy, schema: PatchSchema, path: string): Json[] {
  const base: Json[] = Array.isArray(current) ? clone(current) : [];
  if (strategy === 'primitive') {
    const seen = new Set(base.map((v) => JSON.stringify(v)));
    for (const v of patch) {
      if (!seen.has(JSON.stringify(v))) {
        base.push(clone(v));
        seen.add(JSON.stringify(v));
      }
    }
    return base;
  }
  const { mergeKey } = strategy;
  if (patch.some((p) => isObject(p) && p[DIRECTIVE] === 'replace')) {
    return patch.filter((p) => !(isObject(p) && p[DIRECTIVE] === 'replace')).map(clone);
  }
  for (const item of patch) {
    if (!isObject(item)) throw badRequest(`strategic merge patch: items of ${path} must be objects`);
    const key = item[mergeKey];
    if (key === undefined) throw badRequest(`strategic merge patch: an item of ${path} lacks merge key "${mergeKey}"`);
    const idx = base.findIndex((b) => isObject(b) && b[mergeKey] === key);
    if (item[DIRECTIVE] === 'delete') {
      if (idx >= 0) base.splice(idx, 1);
      continue;
    }
    if (idx >= 0) base[idx] = smpValue(base[idx], item, schema, path) as Json;
    else base.push(smpValue(undefined, item, schema, path) as Json);
  }
  return base;
}
