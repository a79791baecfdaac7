// A minimal OpenAPI v3 discovery: `/openapi/v3` lists one document per group-version and each
// document declares, per resource, a PATCH operation with the `fieldValidation` parameter.
// That is exactly what kubectl 1.32 looks up before `apply`/`create` to decide that the server
// validates fields itself; without it kubectl refuses with "failed to download openapi".
// Schemas are not published (kubectl does not need them for the commands we support).
import { createHash } from 'node:crypto';
import type { ResourceDef } from './resources.ts';

function gvPath(group: string, version: string): string {
  return group ? `apis/${group}/${version}` : `api/${version}`;
}

function groupVersions(defs: ResourceDef[]): Map<string, { group: string; version: string; defs: ResourceDef[] }> {
  const out = new Map<string, { group: string; version: string; defs: ResourceDef[] }>();
  for (const def of defs) {
    for (const version of def.versions) {
      const key = gvPath(def.group, version);
      const entry = out.get(key) ?? { group: def.group, version, defs: [] };
      entry.defs.push(def);
      out.set(key, entry);
    }
  }
  return out;
}

export function openApiV3Document(defs: ResourceDef[], path: string): object | undefined {
  const gv = groupVersions(defs).get(path);
  if (!gv) return undefined;
  const paths: Record<string, object> = {};
  const parameters = ['dryRun', 'fieldManager', 'fieldValidation', 'force'].map((name) => ({
    name,
    in: 'query',
    schema: { type: name === 'force' ? 'boolean' : 'string', uniqueItems: true },
  }));
  for (const def of gv.defs) {
    const base = `/${gvPath(gv.group, gv.version)}${def.namespaced ? '/namespaces/{namespace}' : ''}/${def.plural}/{name}`;
    const gvk = { group: def.group, version: gv.version, kind: def.kind };
    paths[base] = {
      patch: {
        operationId: `patch${def.kind}`,
        parameters,
        responses: { '200': { description: 'OK' } },
        'x-kubernetes-action': 'patch',
        'x-kubernetes-group-version-kind': gvk,
      },
    };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.32.0' },
    paths,
    components: { schemas: {} },
  };
}

export function openApiV3Root(defs: ResourceDef[]): object {
  const paths: Record<string, object> = {};
  for (const key of groupVersions(defs).keys()) {
    const doc = JSON.stringify(openApiV3Document(defs, key));
    const hash = createHash('sha256').update(doc).digest('hex').slice(0, 32).toUpperCase();
    paths[key] = { serverRelativeURL: `/openapi/v3/${key}?hash=${hash}` };
  }
  return { paths };
}

/**
 * An OpenAPI v2 document without definitions. kubectl falls back to client-side validation
 * with v2 when the v3 lookup says "unsupported" (e.g. for `kind: List` manifests) and skips
 * kinds it finds no definition for; a 404 here would make it refuse the manifest instead.
 * kubectl asks for the protobuf form: field 1 (swagger) = "2.0" is a complete Document.
 */
export function openApiV2(accept: string | undefined): { contentType: string; body: Buffer } {
  if (accept?.includes('application/com.github.proto-openapi.spec.v2')) {
    const swagger = Buffer.from('2.0');
    return {
      contentType: 'application/com.github.proto-openapi.spec.v2.v1.0+protobuf',
      body: Buffer.concat([Buffer.from([0x0a, swagger.length]), swagger]),
    };
  }
  const doc = { swagger: '2.0', info: { title: 'Kubernetes', version: 'v1.32.0' }, paths: {}, definitions: {} };
  return { contentType: 'application/json', body: Buffer.from(JSON.stringify(doc)) };
}
