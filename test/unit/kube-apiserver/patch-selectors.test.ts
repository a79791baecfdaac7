// The pure pieces: the three patch formats and the label/field selector grammar.
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../../lab/kube-apiserver/errors.ts';
import { jsonPatch, mergePatch, strategicMergePatch } from '../../../lab/kube-apiserver/patch.ts';
import { parseFieldSelector, parseLabelSelector } from '../../../lab/kube-apiserver/selectors.ts';

const NODE_SCHEMA = {
  'spec.podCIDRs': 'primitive' as const,
  'status.conditions': { mergeKey: 'type' },
  'metadata.finalizers': 'primitive' as const,
};

describe('JSON merge patch (RFC 7386)', () => {
  it('merges objects, deletes on null, replaces lists and scalars', () => {
    expect(mergePatch({ a: { b: 1, c: 2 }, l: [1, 2], s: 'x' }, { a: { b: null, d: 3 }, l: [3], s: 'y' })).toEqual({
      a: { c: 2, d: 3 },
      l: [3],
      s: 'y',
    });
    expect(mergePatch({ a: 1 }, 'whole')).toBe('whole');
  });

  it('does not modify its inputs', () => {
    const target = { a: { b: 1 } };
    mergePatch(target, { a: { b: 2 } });
    expect(target).toEqual({ a: { b: 1 } });
  });
});

describe('strategic merge patch', () => {
  const node = {
    spec: { podCIDRs: ['10.0.1.0/24'] },
    status: {
      conditions: [
        { type: 'Ready', status: 'True' },
        { type: 'NetworkUnavailable', status: 'True' },
      ],
    },
  };

  it('merges list items by their merge key and keeps the others in place', () => {
    const out = strategicMergePatch(
      node,
      {
        status: {
          conditions: [
            { type: 'NetworkUnavailable', status: 'False' },
            { type: 'New', status: 'True' },
          ],
        },
      },
      NODE_SCHEMA,
    );
    expect(out).toEqual({
      spec: node.spec,
      status: {
        conditions: [
          { type: 'Ready', status: 'True' },
          { type: 'NetworkUnavailable', status: 'False' },
          { type: 'New', status: 'True' },
        ],
      },
    });
  });

  it('honours $patch: delete, $patch: replace and $deleteFromPrimitiveList', () => {
    expect(
      strategicMergePatch(node, { status: { conditions: [{ type: 'Ready', $patch: 'delete' }] } }, NODE_SCHEMA),
    ).toMatchObject({ status: { conditions: [{ type: 'NetworkUnavailable' }] } });
    expect(
      strategicMergePatch(
        node,
        { status: { conditions: [{ type: 'Only', status: 'x' }, { $patch: 'replace' }] } },
        NODE_SCHEMA,
      ),
    ).toMatchObject({ status: { conditions: [{ type: 'Only', status: 'x' }] } });
    expect(
      strategicMergePatch(
        { spec: { podCIDRs: ['a', 'b'] } },
        { spec: { '$deleteFromPrimitiveList/podCIDRs': ['a'] } },
        NODE_SCHEMA,
      ),
    ).toEqual({ spec: { podCIDRs: ['b'] } });
    expect(strategicMergePatch(node, { spec: { $patch: 'replace', unschedulable: true } }, NODE_SCHEMA)).toMatchObject({
      spec: { unschedulable: true },
    });
    // $setElementOrder (sent by kubectl apply) is accepted and ignored.
    expect(
      strategicMergePatch(node, { status: { '$setElementOrder/conditions': [{ type: 'Ready' }] } }, NODE_SCHEMA),
    ).toEqual(node);
  });

  it('unions primitive lists with a merge strategy and replaces lists without one', () => {
    expect(strategicMergePatch(node, { spec: { podCIDRs: ['10.0.1.0/24', 'fd00::/64'] } }, NODE_SCHEMA)).toMatchObject({
      spec: { podCIDRs: ['10.0.1.0/24', 'fd00::/64'] },
    });
    expect(strategicMergePatch({ spec: { taints: [1, 2] } }, { spec: { taints: [3] } }, NODE_SCHEMA)).toEqual({
      spec: { taints: [3] },
    });
  });

  it('refuses merge-list items without the merge key', () => {
    expect(() => strategicMergePatch(node, { status: { conditions: [{ status: 'x' }] } }, NODE_SCHEMA)).toThrow(
      /merge key "type"/,
    );
  });
});

describe('JSON patch (RFC 6902)', () => {
  it('applies add/remove/replace/move/copy/test, including "-" and escaped pointers', () => {
    const doc = { a: [1, 2], 'x/y': { '~k': 1 } };
    const out = jsonPatch(doc, [
      { op: 'add', path: '/a/-', value: 3 },
      { op: 'add', path: '/a/0', value: 0 },
      { op: 'remove', path: '/a/1' },
      { op: 'replace', path: '/x~1y/~0k', value: 2 },
      { op: 'copy', from: '/a', path: '/b' },
      { op: 'move', from: '/x~1y', path: '/z' },
      { op: 'test', path: '/z/~0k', value: 2 },
    ]);
    expect(out).toEqual({ a: [0, 2, 3], b: [0, 2, 3], z: { '~k': 2 } });
    expect(doc).toEqual({ a: [1, 2], 'x/y': { '~k': 1 } });
  });

  it('fails with 422 on a missing path or failed test and 400 on malformed operations', () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return (err as ApiError).code;
      }
      return 0;
    };
    expect(code(() => jsonPatch({}, [{ op: 'remove', path: '/nope' }]))).toBe(422);
    expect(code(() => jsonPatch({ a: 1 }, [{ op: 'replace', path: '/b', value: 1 }]))).toBe(422);
    expect(code(() => jsonPatch({ a: 1 }, [{ op: 'test', path: '/a', value: 2 }]))).toBe(422);
    expect(code(() => jsonPatch({ a: [] }, [{ op: 'add', path: '/a/5', value: 2 }]))).toBe(422);
    expect(code(() => jsonPatch({}, { op: 'add' }))).toBe(400);
    expect(code(() => jsonPatch({}, [{ op: 'frobnicate', path: '/a' }]))).toBe(400);
    expect(code(() => jsonPatch({}, [{ op: 'add', path: 'no-slash', value: 1 }]))).toBe(400);
  });
});

describe('selectors', () => {
  it('parses the label selector grammar', () => {
    const sel = parseLabelSelector('env in (prod, staging), tier!=db, !legacy, app');
    expect(sel({ env: 'prod', tier: 'web', app: 'x' })).toBe(true);
    expect(sel({ env: 'prod', tier: 'db', app: 'x' })).toBe(false);
    expect(sel({ env: 'dev', app: 'x' })).toBe(false);
    expect(sel({ env: 'prod', app: 'x', legacy: '' })).toBe(false);
    expect(sel({ env: 'prod' })).toBe(false);
    expect(parseLabelSelector('')({})).toBe(true);
    expect(parseLabelSelector('edgemesh.io/site=edge-1')({ 'edgemesh.io/site': 'edge-1' })).toBe(true);
    expect(parseLabelSelector('a notin (x)')({})).toBe(true);
  });

  it('rejects malformed label selectors and unsupported field selectors with 400', () => {
    for (const bad of ['a=b=c!', 'Bad Key=1', 'a in (x y)']) {
      expect(() => parseLabelSelector(bad), bad).toThrow(ApiError);
    }
    const keys = new Set(['metadata.name']);
    expect(parseFieldSelector('metadata.name=a', keys)({ 'metadata.name': 'a' })).toBe(true);
    expect(() => parseFieldSelector('spec.x=a', keys)).toThrow(/field label not supported: spec.x/);
    expect(() => parseFieldSelector('metadata.name in (a)', keys)).toThrow(ApiError);
  });
});
