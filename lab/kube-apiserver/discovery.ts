// Discovery documents (/api, /apis, /api/v1, /apis/<group>/<version>) in the legacy
// (unaggregated) form. kubectl 1.32 asks for aggregated discovery first and falls back to
// these when the reply's Content-Type is plain application/json.
import { apiVersionOf, type ResourceDef, VERBS } from './resources.ts';

export function versionInfo(): Record<string, string> {
  return {
    major: '1',
    minor: '32',
    gitVersion: 'v1.32.0-edgemesh-lab',
    gitCommit: '0000000000000000000000000000000000000000',
    gitTreeState: 'clean',
    buildDate: '2026-01-01T00:00:00Z',
    goVersion: 'go1.23.0',
    compiler: 'gc',
    platform: 'linux/amd64',
  };
}

export function coreVersions(serverAddress: string): object {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

function groupsOf(defs: ResourceDef[]): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const def of defs) {
    if (!def.group) continue;
    const versions = groups.get(def.group) ?? [];
    for (const v of def.versions) if (!versions.includes(v)) versions.push(v);
    groups.set(def.group, versions);
  }
  return groups;
}

function groupDoc(name: string, versions: string[]): object {
  const list = versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v }));
  return { name, versions: list, preferredVersion: list[0] };
}

export function groupList(defs: ResourceDef[]): object {
  const groups = [...groupsOf(defs).entries()].sort(([a], [b]) => a.localeCompare(b));
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(([name, versions]) => groupDoc(name, versions)) };
}

export function group(defs: ResourceDef[], name: string): object | undefined {
  const versions = groupsOf(defs).get(name);
  return versions ? { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(name, versions) } : undefined;
}

export function resourceList(defs: ResourceDef[], groupName: string, version: string): object | undefined {
  const served = defs.filter((d) => d.group === groupName && d.versions.includes(version));
  if (served.length === 0 && groupName !== '') return undefined;
  const resources: object[] = [];
  for (const def of served) {
    resources.push({
      name: def.plural,
      singularName: def.singular,
      namespaced: def.namespaced,
      kind: def.kind,
      verbs: VERBS,
      ...(def.shortNames.length ? { shortNames: def.shortNames } : {}),
      ...(def.categories.length ? { categories: def.categories } : {}),
      storageVersionHash: '',
    });
    if (def.hasStatus) {
      resources.push({
        name: `${def.plural}/status`,
        singularName: '',
        namespaced: def.namespaced,
        kind: def.kind,
        verbs: ['get', 'patch', 'update'],
      });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf(groupName, version), resources };
}
