// The ValidatingAdmissionPolicy that scopes each agent to its own Node and IPAMBlocks
// (deploy/admission-policy.yaml), evaluated the way the API server does — match
// conditions, then the variables in order, then every validation; an evaluation error
// denies (failurePolicy: Fail) — with a CEL evaluator (@marcbachmann/cel-js), against
// admission requests an agent, a compromised agent and others would send.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Environment } from '@marcbachmann/cel-js';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { blockObjectName } from '../../../ipam/node-blocks.ts';

const ROOT = join(import.meta.dirname, '../../..');

interface Policy {
  metadata: { name: string };
  spec: {
    failurePolicy: string;
    matchConstraints: { resourceRules: Array<{ apiGroups: string[]; operations: string[]; resources: string[] }> };
    matchConditions: Array<{ name: string; expression: string }>;
    variables: Array<{ name: string; expression: string }>;
    validations: Array<{ expression: string; message?: string; messageExpression?: string }>;
  };
}

const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/admission-policy.yaml'), 'utf8')).map((d) => d.toJS());
const policy = docs.find((d) => d.kind === 'ValidatingAdmissionPolicy') as Policy;
const binding = docs.find((d) => d.kind === 'ValidatingAdmissionPolicyBinding');

// Kubernetes' CEL environment includes the strings extension (cel-go ext.Strings): replace()
// replaces every occurrence. The evaluator has the standard library only, so it is added here.
const env = new Environment({ unlistedVariablesAreDyn: true, homogeneousAggregateLiterals: false }).registerFunction(
  'string.replace(string, string): string',
  (s: string, from: string, to: string) => s.replaceAll(from, to),
);

/** JSON integers are CEL ints (the API server types them from the schema); CEL wants BigInt for those. */
function celValue(v: unknown): unknown {
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (Array.isArray(v)) return v.map(celValue);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, celValue(x)]));
  return v;
}

interface Request {
  username?: string;
  nodeClaim?: string;
  resource: 'nodes' | 'ipamblocks';
  subResource?: string;
  operation: 'CREATE' | 'UPDATE' | 'DELETE';
  name: string;
  object?: Record<string, unknown> | null;
  oldObject?: Record<string, unknown> | null;
}

/** Admission of one request: undefined when allowed, else the messages of the failed validations. */
function admit(r: Request): string[] | undefined {
  const spec = policy.spec;
  const group = r.resource === 'nodes' ? '' : 'edgemesh.io';
  const resource = r.subResource ? `${r.resource}/${r.subResource}` : r.resource;
  const matched = spec.matchConstraints.resourceRules.some(
    (rule) =>
      rule.apiGroups.includes(group) && rule.operations.includes(r.operation) && rule.resources.includes(resource),
  );
  if (!matched) return undefined;
  const request = {
    operation: r.operation,
    name: r.name,
    resource: { group, version: r.resource === 'nodes' ? 'v1' : 'v1alpha1', resource: r.resource },
    subResource: r.subResource ?? '',
    userInfo: {
      username: r.username ?? 'system:serviceaccount:kube-system:edgemesh',
      groups: ['system:serviceaccounts', 'system:authenticated'],
      extra: r.nodeClaim === undefined ? {} : { 'authentication.kubernetes.io/node-name': [r.nodeClaim] },
    },
  };
  const ctx: Record<string, unknown> = {
    request,
    object: celValue(r.object ?? null),
    oldObject: celValue(r.oldObject ?? null),
  };
  const denied: string[] = [];
  const fail = (what: string) => {
    if (spec.failurePolicy !== 'Fail') throw new Error('the policy must fail closed');
    denied.push(what);
  };
  try {
    if (!spec.matchConditions.every((c) => env.evaluate(c.expression, ctx) === true)) return undefined;
  } catch (err) {
    fail(`match condition error: ${(err as Error).message}`);
    return denied;
  }
  const variables: Record<string, unknown> = {};
  ctx.variables = variables;
  for (const v of spec.variables) {
    try {
      variables[v.name] = env.evaluate(v.expression, ctx);
    } catch (err) {
      variables[v.name] = undefined;
      fail(`variable ${v.name}: ${(err as Error).message}`);
    }
  }
  for (const v of spec.validations) {
    try {
      if (env.evaluate(v.expression, ctx) !== true) {
        fail(v.messageExpression ? String(env.evaluate(v.messageExpression, ctx)) : (v.message ?? v.expression));
      }
    } catch (err) {
      fail(`error in ${v.expression}: ${(err as Error).message}`);
    }
  }
  return denied.length > 0 ? denied : undefined;
}

function nodeObject(
  name: string,
  over: { labels?: Record<string, string>; annotations?: Record<string, string> } = {},
) {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      uid: `uid-${name}`,
      labels: { 'kubernetes.io/hostname': name, 'edgemesh.io/site': 'edge-a', ...over.labels },
      annotations: { 'node.alpha.kubernetes.io/ttl': '0', 'edgemesh.io/peer-id': `peer-${name}`, ...over.annotations },
    },
    spec: { podCIDRs: [] as string[] },
    status: {
      addresses: [{ type: 'InternalIP', address: '192.168.1.2' }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

function blockObject(cidr: string, node: string, name = blockObjectName(cidr)) {
  return {
    apiVersion: 'edgemesh.io/v1alpha1',
    kind: 'IPAMBlock',
    metadata: { name, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: node, uid: `uid-${node}` }] },
    spec: { cidr, node, family: cidr.includes(':') ? 6 : 4 },
  };
}

const updateNode = (
  claim: string,
  old: ReturnType<typeof nodeObject>,
  next: ReturnType<typeof nodeObject>,
  sub?: string,
) =>
  admit({
    nodeClaim: claim,
    resource: 'nodes',
    operation: 'UPDATE',
    name: old.metadata.name,
    object: next,
    oldObject: old,
    ...(sub ? { subResource: sub } : {}),
  });

describe('admission policy: an agent changes only its own Node', () => {
  it('is bound with Deny and fails closed', () => {
    expect(binding.spec).toEqual({ policyName: policy.metadata.name, validationActions: ['Deny'] });
    expect(policy.spec.failurePolicy).toBe('Fail');
  });

  it('lets an agent publish its own annotations and set its status conditions', () => {
    const old = nodeObject('edge-a-1');
    expect(
      updateNode(
        'edge-a-1',
        old,
        nodeObject('edge-a-1', { annotations: { 'edgemesh.io/pod-cidrs': '10.244.3.0/24' } }),
      ),
    ).toBeUndefined();
    const withCondition = nodeObject('edge-a-1');
    withCondition.status.conditions.push({ type: 'EdgemeshIPAMReady', status: 'True' });
    expect(updateNode('edge-a-1', old, withCondition, 'status')).toBeUndefined();
  });

  it("refuses another node's Node: its peer ID, its pod CIDRs", () => {
    const old = nodeObject('edge-b-1');
    const stolen = nodeObject('edge-b-1', { annotations: { 'edgemesh.io/peer-id': 'peer-edge-a-1' } });
    expect(updateNode('edge-a-1', old, stolen)).toEqual([
      'an edgemesh agent may change only its own Node edge-a-1, not edge-b-1',
    ]);
  });

  it('refuses labels: a node cannot make itself a relay or move to another site', () => {
    const old = nodeObject('edge-a-1');
    expect(updateNode('edge-a-1', old, nodeObject('edge-a-1', { labels: { 'edgemesh.io/relay': 'true' } }))).toEqual([
      expect.stringMatching(/labels .* are the operator's/),
    ]);
    expect(
      updateNode('edge-a-1', old, nodeObject('edge-a-1', { labels: { 'edgemesh.io/site': 'cloud' } })),
    ).toHaveLength(1);
  });

  it('refuses other annotations, spec and status.addresses', () => {
    const old = nodeObject('edge-a-1');
    expect(
      updateNode('edge-a-1', old, nodeObject('edge-a-1', { annotations: { 'node.alpha.kubernetes.io/ttl': '9' } })),
    ).toEqual(['an edgemesh agent may change only the edgemesh.io/ annotations of its Node']);
    const removed = nodeObject('edge-a-1');
    delete (removed.metadata.annotations as Record<string, string>)['node.alpha.kubernetes.io/ttl'];
    expect(updateNode('edge-a-1', old, removed)).toHaveLength(1);
    const spec = nodeObject('edge-a-1');
    spec.spec.podCIDRs = ['10.244.0.0/16'];
    expect(updateNode('edge-a-1', old, spec)).toEqual([expect.stringMatching(/Node spec/)]);
    const moved = nodeObject('edge-a-1');
    moved.status.addresses = [{ type: 'InternalIP', address: '192.168.1.66' }];
    expect(updateNode('edge-a-1', old, moved, 'status')).toEqual([expect.stringMatching(/status.addresses/)]);
  });

  it('refuses everything from a token without the node-name claim', () => {
    const old = nodeObject('edge-a-1');
    const r = admit({ resource: 'nodes', operation: 'UPDATE', name: 'edge-a-1', object: old, oldObject: old });
    expect(r?.[0]).toMatch(/carries no node name/);
  });

  it('leaves everyone else to RBAC: the kubelet, an operator labelling a relay', () => {
    const old = nodeObject('edge-a-1');
    const relay = nodeObject('edge-a-1', { labels: { 'edgemesh.io/relay': 'true' } });
    expect(
      admit({
        username: 'kubernetes-admin',
        resource: 'nodes',
        operation: 'UPDATE',
        name: 'edge-a-1',
        object: relay,
        oldObject: old,
      }),
    ).toBeUndefined();
    expect(
      admit({
        username: 'system:node:edge-a-1',
        resource: 'nodes',
        operation: 'UPDATE',
        name: 'edge-a-1',
        object: relay,
        oldObject: old,
      }),
    ).toBeUndefined();
  });
});

describe('admission policy: an agent claims and releases only its own IPAMBlocks', () => {
  const claim = (block: ReturnType<typeof blockObject>, node = 'edge-a-1') =>
    admit({ nodeClaim: node, resource: 'ipamblocks', operation: 'CREATE', name: block.metadata.name, object: block });

  it('lets an agent claim, re-own and release its own blocks (IPv4 and IPv6)', () => {
    expect(claim(blockObject('10.244.3.0/24', 'edge-a-1'))).toBeUndefined();
    expect(claim(blockObject('fd00:10:244:0:3::/80', 'edge-a-1'))).toBeUndefined();
    const mine = blockObject('10.244.3.0/24', 'edge-a-1');
    const reowned = structuredClone(mine);
    reowned.metadata.ownerReferences[0]!.uid = 'uid-new';
    expect(
      admit({
        nodeClaim: 'edge-a-1',
        resource: 'ipamblocks',
        operation: 'UPDATE',
        name: mine.metadata.name,
        object: reowned,
        oldObject: mine,
      }),
    ).toBeUndefined();
    expect(
      admit({
        nodeClaim: 'edge-a-1',
        resource: 'ipamblocks',
        operation: 'DELETE',
        name: mine.metadata.name,
        object: null,
        oldObject: mine,
      }),
    ).toBeUndefined();
  });

  it("refuses claiming for another node, stealing or deleting another node's block", () => {
    expect(claim(blockObject('10.244.9.0/24', 'edge-b-1'))).toEqual([
      'an edgemesh agent may claim IPAMBlocks only for its own node edge-a-1',
      "an IPAMBlock may be owned only by its own node's Node object",
    ]);
    const theirs = blockObject('10.244.9.0/24', 'edge-b-1');
    const stolen = structuredClone(theirs);
    stolen.spec.node = 'edge-a-1';
    expect(
      admit({
        nodeClaim: 'edge-a-1',
        resource: 'ipamblocks',
        operation: 'UPDATE',
        name: theirs.metadata.name,
        object: stolen,
        oldObject: theirs,
      }),
    ).toEqual(expect.arrayContaining([expect.stringMatching(/change or delete only IPAMBlocks of its own node/)]));
    expect(
      admit({
        nodeClaim: 'edge-a-1',
        resource: 'ipamblocks',
        operation: 'DELETE',
        name: theirs.metadata.name,
        object: null,
        oldObject: theirs,
      }),
    ).toEqual(['an edgemesh agent may change or delete only IPAMBlocks of its own node edge-a-1']);
  });

  it('refuses a block whose name is not its CIDR, and any change of CIDR or node', () => {
    expect(claim(blockObject('10.244.0.0/16', 'edge-a-1', 'v4-10-244-3-0-24'))).toEqual([
      expect.stringMatching(/named after its CIDR/),
    ]);
    const mine = blockObject('10.244.3.0/24', 'edge-a-1');
    const grown = structuredClone(mine);
    grown.spec.cidr = '10.244.0.0/16';
    expect(
      admit({
        nodeClaim: 'edge-a-1',
        resource: 'ipamblocks',
        operation: 'UPDATE',
        name: mine.metadata.name,
        object: grown,
        oldObject: mine,
      }),
    ).toEqual(expect.arrayContaining([expect.stringMatching(/never change/)]));
  });
});
