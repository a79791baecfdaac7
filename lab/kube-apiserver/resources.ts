// What the server serves: the built-in resources (with their patch strategies and the
// field selectors the real API server allows for them) and resources defined by CRDs.
import { ApiError } from './errors.ts';
import type { PatchSchema } from './patch.ts';

export type K8sMetadata = {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
  [key: string]: unknown;
};

export type OwnerReference = {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
};

export type K8sObject = { apiVersion?: string; kind?: string; metadata: K8sMetadata; [key: string]: unknown };

export type PrinterColumn = { name: string; type: string; jsonPath: string; description?: string; priority?: number };

export type ResourceDef = {
  group: string;
  /** Versions served, the first is the preferred (and storage) one. */
  versions: string[];
  plural: string;
  singular: string;
  kind: string;
  listKind: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  hasStatus: boolean;
  /** Strategic merge patch is refused with 415 for custom resources, as kube-apiserver does. */
  strategicMerge: PatchSchema | undefined;
  /** Field selector keys beyond metadata.name / metadata.namespace. */
  extraFieldKeys: readonly string[];
  printerColumns: PrinterColumn[];
  /** The openAPIV3Schema per version, for custom resources (validation and pruning). */
  schemas?: Record<string, unknown>;
  /** Set for custom resources: the name of the CRD that defines them. */
  crdName?: string;
};

export const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

export function resourceKey(group: string, plural: string): string {
  return `${group}/${plural}`;
}

export function apiVersionOf(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

/** Reads a dotted path (`spec.nodeName`) as a field-selector string value. */
function fieldValue(obj: unknown, path: string): string | undefined {
  let node: unknown = obj;
  for (const part of path.split('.')) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[part];
  }
  if (node === undefined || node === null) return undefined;
  return typeof node === 'object' ? JSON.stringify(node) : String(node);
}

export function fieldSelectorKeys(def: ResourceDef): Set<string> {
  return new Set(['metadata.name', 'metadata.namespace', ...def.extraFieldKeys]);
}

export function selectableFields(def: ResourceDef, obj: K8sObject): Record<string, string | undefined> {
  const fields: Record<string, string | undefined> = {
    'metadata.name': obj.metadata.name,
    'metadata.namespace': def.namespaced ? (obj.metadata.namespace ?? '') : '',
  };
  for (const key of def.extraFieldKeys) fields[key] = fieldValue(obj, key) ?? '';
  return fields;
}

const OBJECT_META_SCHEMA: PatchSchema = {
  'metadata.ownerReferences': { mergeKey: 'uid' },
  'metadata.finalizers': 'primitive',
};

const AGE: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

function builtin(
  partial: Partial<ResourceDef> & Pick<ResourceDef, 'plural' | 'kind' | 'namespaced'> & { group?: string },
): ResourceDef {
  return {
    group: partial.group ?? '',
    versions: partial.versions ?? ['v1'],
    singular: partial.singular ?? partial.kind.toLowerCase(),
    listKind: `${partial.kind}List`,
    shortNames: [],
    categories: [],
    hasStatus: false,
    extraFieldKeys: [],
    printerColumns: [AGE],
    ...partial,
    strategicMerge: { ...OBJECT_META_SCHEMA, ...(partial.strategicMerge ?? {}) },
  };
}

export function builtinResources(): ResourceDef[] {
  return [
    builtin({
      plural: 'namespaces',
      kind: 'Namespace',
      namespaced: false,
      shortNames: ['ns'],
      hasStatus: true,
      extraFieldKeys: ['status.phase'],
      printerColumns: [{ name: 'Status', type: 'string', jsonPath: '.status.phase' }, AGE],
    }),
    builtin({
      plural: 'nodes',
      kind: 'Node',
      namespaced: false,
      shortNames: ['no'],
      hasStatus: true,
      extraFieldKeys: ['spec.unschedulable'],
      strategicMerge: {
        'spec.podCIDRs': 'primitive',
        'spec.taints': { mergeKey: 'key' },
        'status.conditions': { mergeKey: 'type' },
        'status.addresses': { mergeKey: 'type' },
      },
      printerColumns: [
        { name: 'Status', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
        { name: 'Roles', type: 'string', jsonPath: '.metadata.labels' },
        AGE,
        { name: 'Version', type: 'string', jsonPath: '.status.nodeInfo.kubeletVersion' },
        { name: 'Pod-CIDRs', type: 'string', jsonPath: '.spec.podCIDRs', priority: 1 },
      ],
    }),
    builtin({
      plural: 'pods',
      kind: 'Pod',
      namespaced: true,
      shortNames: ['po'],
      categories: ['all'],
      hasStatus: true,
      extraFieldKeys: ['spec.nodeName', 'status.phase', 'status.podIP'],
      strategicMerge: {
        'spec.containers': { mergeKey: 'name' },
        'status.conditions': { mergeKey: 'type' },
        'status.podIPs': { mergeKey: 'ip' },
      },
      printerColumns: [
        { name: 'Status', type: 'string', jsonPath: '.status.phase' },
        { name: 'IP', type: 'string', jsonPath: '.status.podIP', priority: 1 },
        { name: 'Node', type: 'string', jsonPath: '.spec.nodeName', priority: 1 },
        AGE,
      ],
    }),
    builtin({
      plural: 'events',
      kind: 'Event',
      namespaced: true,
      shortNames: ['ev'],
      extraFieldKeys: [
        'involvedObject.kind',
        'involvedObject.name',
        'involvedObject.namespace',
        'involvedObject.uid',
        'reason',
        'type',
        'source',
      ],
      printerColumns: [
        { name: 'Type', type: 'string', jsonPath: '.type' },
        { name: 'Reason', type: 'string', jsonPath: '.reason' },
        { name: 'Object', type: 'string', jsonPath: '.involvedObject.name' },
        { name: 'Message', type: 'string', jsonPath: '.message' },
      ],
    }),
    builtin({ plural: 'configmaps', kind: 'ConfigMap', namespaced: true, shortNames: ['cm'] }),
    builtin({
      group: 'coordination.k8s.io',
      plural: 'leases',
      kind: 'Lease',
      namespaced: true,
      printerColumns: [{ name: 'Holder', type: 'string', jsonPath: '.spec.holderIdentity' }, AGE],
    }),
    builtin({
      group: 'apiextensions.k8s.io',
      plural: 'customresourcedefinitions',
      singular: 'customresourcedefinition',
      kind: 'CustomResourceDefinition',
      namespaced: false,
      shortNames: ['crd', 'crds'],
      hasStatus: true,
      printerColumns: [{ name: 'Created At', type: 'date', jsonPath: '.metadata.creationTimestamp' }],
    }),
  ];
}

type CrdVersion = {
  name?: unknown;
  served?: unknown;
  storage?: unknown;
  subresources?: { status?: unknown };
  schema?: { openAPIV3Schema?: unknown };
  additionalPrinterColumns?: PrinterColumn[];
};

/** Validates a CustomResourceDefinition and derives the resource it serves. */
export function resourceFromCrd(crd: K8sObject): ResourceDef {
  const spec = (crd.spec ?? {}) as {
    group?: unknown;
    scope?: unknown;
    names?: Record<string, unknown>;
    versions?: CrdVersion[];
  };
  const causes: { field: string; message: string }[] = [];
  const names = spec.names ?? {};
  const group = typeof spec.group === 'string' ? spec.group : '';
  const plural = typeof names.plural === 'string' ? names.plural : '';
  const kind = typeof names.kind === 'string' ? names.kind : '';
  if (!group.includes('.')) causes.push({ field: 'spec.group', message: 'should be a domain with at least one dot' });
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(plural)) {
    causes.push({ field: 'spec.names.plural', message: 'must be a lowercase DNS-1035 label' });
  }
  if (!kind) causes.push({ field: 'spec.names.kind', message: 'Required value' });
  if (spec.scope !== 'Cluster' && spec.scope !== 'Namespaced') {
    causes.push({ field: 'spec.scope', message: 'Unsupported value: must be "Cluster" or "Namespaced"' });
  }
  const versions = Array.isArray(spec.versions) ? spec.versions : [];
  const served = versions.filter((v) => v.served === true && typeof v.name === 'string');
  if (served.length === 0) causes.push({ field: 'spec.versions', message: 'must have at least one served version' });
  if (versions.filter((v) => v.storage === true).length !== 1) {
    causes.push({ field: 'spec.versions', message: 'must have exactly one version marked as storage version' });
  }
  if (crd.metadata.name !== `${plural}.${group}`) {
    causes.push({ field: 'metadata.name', message: `must be spec.names.plural+"."+spec.group` });
  }
  if (causes.length > 0) {
    const text = causes.map((c) => `${c.field}: ${c.message}`).join(', ');
    throw new ApiError(
      422,
      'Invalid',
      `CustomResourceDefinition.apiextensions.k8s.io "${crd.metadata.name}" is invalid: ${text}`,
      {
        name: crd.metadata.name,
        group: 'apiextensions.k8s.io',
        kind: 'CustomResourceDefinition',
        causes: causes.map((c) => ({ reason: 'FieldValueInvalid', ...c })),
      },
    );
  }
  const storage = versions.find((v) => v.storage === true)!;
  const ordered = [storage, ...served.filter((v) => v !== storage)].filter((v) => v.served === true);
  const schemas: Record<string, unknown> = {};
  for (const v of versions) if (v.schema?.openAPIV3Schema) schemas[String(v.name)] = v.schema.openAPIV3Schema;
  return {
    group,
    versions: ordered.map((v) => String(v.name)),
    plural,
    singular: typeof names.singular === 'string' ? names.singular : kind.toLowerCase(),
    kind,
    listKind: typeof names.listKind === 'string' ? names.listKind : `${kind}List`,
    namespaced: spec.scope === 'Namespaced',
    shortNames: Array.isArray(names.shortNames) ? (names.shortNames as string[]) : [],
    categories: Array.isArray(names.categories) ? (names.categories as string[]) : [],
    hasStatus: storage.subresources?.status !== undefined,
    strategicMerge: undefined,
    extraFieldKeys: [],
    // As in kube-apiserver: additionalPrinterColumns replace the default Age column.
    printerColumns: storage.additionalPrinterColumns?.length ? storage.additionalPrinterColumns : [AGE],
    schemas,
    crdName: crd.metadata.name,
  };
}
