// Server-side printing (meta.k8s.io/v1 Table), which `kubectl get` asks for with
// `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Columns come from the resource's
// printer columns (a CRD's additionalPrinterColumns); ages are rendered here like the real
// server does, so kubectl prints `5m`, not a timestamp.
import type { K8sObject, PrinterColumn, ResourceDef } from './resources.ts';

export function wantsTable(accept: string | undefined): boolean {
  if (!accept) return false;
  const first = accept.split(',')[0] ?? '';
  return /;\s*as=Table/.test(first) && /g=meta\.k8s\.io/.test(first);
}

/** Evaluates the JSONPath subset printer columns use: `.a.b`, `[0]`, `[?(@.type=="Ready")]`. */
export function evalJsonPath(obj: unknown, path: string): unknown {
  let nodes: unknown[] = [obj];
  const tokens = path.match(/\.[^.[]+|\[[^\]]*\]/g) ?? [];
  for (const token of tokens) {
    const next: unknown[] = [];
    for (const node of nodes) {
      if (node === null || typeof node !== 'object') continue;
      if (token.startsWith('.')) {
        const v = (node as Record<string, unknown>)[token.slice(1)];
        if (v !== undefined) next.push(v);
        continue;
      }
      const inner = token.slice(1, -1);
      const filter = /^\?\(@\.([\w.]+)\s*==\s*["']([^"']*)["']\)$/.exec(inner);
      if (filter && Array.isArray(node)) {
        for (const item of node) if (evalJsonPath(item, `.${filter[1]}`) === filter[2]) next.push(item);
      } else if (inner === '*' && Array.isArray(node)) next.push(...node);
      else if (/^[0-9]+$/.test(inner) && Array.isArray(node) && node[Number(inner)] !== undefined) {
        next.push(node[Number(inner)]);
      }
    }
    nodes = next;
  }
  return nodes.length === 0 ? undefined : nodes.length === 1 ? nodes[0] : nodes;
}

export function humanAge(timestamp: string | undefined, now = Date.now()): string {
  if (!timestamp) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

function nodeRoles(obj: K8sObject): string {
  const roles = Object.keys(obj.metadata.labels ?? {})
    .filter((k) => k.startsWith('node-role.kubernetes.io/'))
    .map((k) => k.slice('node-role.kubernetes.io/'.length));
  return roles.length ? roles.sort().join(',') : '<none>';
}

function cell(def: ResourceDef, col: PrinterColumn, obj: K8sObject): unknown {
  if (def.plural === 'nodes' && col.name === 'Roles') return nodeRoles(obj);
  const value = evalJsonPath(obj, col.jsonPath);
  if (col.type === 'date') return humanAge(typeof value === 'string' ? value : undefined);
  if (def.plural === 'nodes' && col.name === 'Status') {
    const ready = value === 'True' ? 'Ready' : 'NotReady';
    return obj.spec && (obj.spec as { unschedulable?: boolean }).unschedulable ? `${ready},SchedulingDisabled` : ready;
  }
  if (value === undefined) return col.type === 'string' ? '<none>' : null;
  if (typeof value === 'object') return Array.isArray(value) ? value.join(',') : JSON.stringify(value);
  return value;
}

export function renderTable(def: ResourceDef, items: K8sObject[], q: URLSearchParams, rv: string): object {
  const include = q.get('includeObject') ?? 'Metadata';
  const columns = def.printerColumns;
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion: rv },
    columnDefinitions: [
      { name: 'Name', type: 'string', format: 'name', description: 'Name of the object', priority: 0 },
      ...columns.map((c) => ({
        name: c.name,
        type: c.type === 'date' ? 'string' : c.type,
        format: '',
        description: c.description ?? '',
        priority: c.priority ?? 0,
      })),
    ],
    rows: items.map((obj) => ({
      cells: [obj.metadata.name, ...columns.map((c) => cell(def, c, obj))],
      ...(include === 'None'
        ? {}
        : {
            object:
              include === 'Object'
                ? obj
                : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: obj.metadata },
          }),
    })),
  };
}
