// Server-side printing: the Table kubectl asks for, JSONPath of printer columns, ages.
import { describe, expect, it } from 'vitest';
import { builtinResources, type K8sObject } from '../../../lab/kube-apiserver/resources.ts';
import { evalJsonPath, humanAge, renderTable, wantsTable } from '../../../lab/kube-apiserver/table.ts';

const nodes = builtinResources().find((d) => d.plural === 'nodes')!;

describe('table', () => {
  it('recognises the Accept header kubectl sends', () => {
    expect(
      wantsTable(
        'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json',
      ),
    ).toBe(true);
    expect(wantsTable('application/json')).toBe(false);
    expect(wantsTable(undefined)).toBe(false);
  });

  it('evaluates the JSONPath subset printer columns use', () => {
    const obj = {
      status: {
        conditions: [
          { type: 'A', status: 'x' },
          { type: 'Ready', status: 'True' },
        ],
      },
      spec: { l: [1, 2] },
    };
    expect(evalJsonPath(obj, '.status.conditions[?(@.type=="Ready")].status')).toBe('True');
    expect(evalJsonPath(obj, '.spec.l[1]')).toBe(2);
    expect(evalJsonPath(obj, '.spec.l[*]')).toEqual([1, 2]);
    expect(evalJsonPath(obj, '.nope.x')).toBeUndefined();
  });

  it('renders ages like kubectl', () => {
    const now = Date.parse('2026-01-10T00:00:00Z');
    expect(humanAge('2026-01-09T23:59:30Z', now)).toBe('30s');
    expect(humanAge('2026-01-09T23:55:30Z', now)).toBe('4m30s');
    expect(humanAge('2026-01-09T22:00:00Z', now)).toBe('120m');
    expect(humanAge('2026-01-09T00:00:00Z', now)).toBe('24h');
    expect(humanAge('2026-01-01T00:00:00Z', now)).toBe('9d');
  });

  it('prints Node rows with status, roles and version, and the object metadata', () => {
    const node: K8sObject = {
      metadata: {
        name: 'n1',
        labels: { 'node-role.kubernetes.io/relay': '', x: 'y' },
        creationTimestamp: new Date().toISOString(),
      },
      spec: { unschedulable: true },
      status: { conditions: [{ type: 'Ready', status: 'True' }], nodeInfo: { kubeletVersion: 'v1.32.0' } },
    };
    const table = renderTable(nodes, [node], new URLSearchParams(), '5') as {
      columnDefinitions: { name: string }[];
      rows: { cells: unknown[]; object: { kind: string; metadata: { name: string } } }[];
    };
    expect(table.columnDefinitions.map((c) => c.name)).toEqual([
      'Name',
      'Status',
      'Roles',
      'Age',
      'Version',
      'Pod-CIDRs',
    ]);
    expect(table.rows[0]!.cells.slice(0, 3)).toEqual(['n1', 'Ready,SchedulingDisabled', 'relay']);
    expect(table.rows[0]!.cells[4]).toBe('v1.32.0');
    expect(table.rows[0]!.object).toMatchObject({ kind: 'PartialObjectMetadata', metadata: { name: 'n1' } });
  });
});
