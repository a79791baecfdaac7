// Every agent caches every Node of the cluster: the informer keeps only what the agent reads.
import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { trimNode } from '../../../agent/kube.ts';

/** A Node as a kubelet registers it (abridged: real ones list dozens of images). */
function kubeletNode(): V1Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: 'edge-a-1',
      uid: '0b7a2a5e-6a3c-4f57-9d55-1f2f3e4d5c6b',
      resourceVersion: '4711',
      labels: { 'kubernetes.io/hostname': 'edge-a-1', 'edgemesh.io/site': 'edge-a' },
      annotations: { 'edgemesh.io/peer-id': '12D3KooW', 'node.alpha.kubernetes.io/ttl': '0' },
      managedFields: [
        { manager: 'kubelet', operation: 'Update', fieldsType: 'FieldsV1', fieldsV1: { 'f:status': {} } },
      ],
    },
    spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'], providerID: 'kind://edge-a-1' },
    status: {
      addresses: [
        { type: 'InternalIP', address: '192.168.10.11' },
        { type: 'Hostname', address: 'edge-a-1' },
      ],
      conditions: [{ type: 'Ready', status: 'True' }],
      images: [{ names: ['registry.k8s.io/pause:3.10'], sizeBytes: 320368 }],
      capacity: { cpu: '2', memory: '2Gi' },
      nodeInfo: {
        architecture: 'amd64',
        bootID: '',
        containerRuntimeVersion: 'containerd://1.7',
        kernelVersion: '6.18',
        kubeProxyVersion: '',
        kubeletVersion: 'v1.32.0',
        machineID: '',
        operatingSystem: 'linux',
        osImage: 'Debian',
        systemUUID: '',
      },
    },
  };
}

describe('trimNode', () => {
  it('keeps identity, edgemesh labels and annotations, pod CIDRs and node IPs; drops the rest', () => {
    const node = kubeletNode();
    node.status!.addresses!.push({ type: 'ExternalIP', address: '203.0.113.7' });
    expect(trimNode(node)).toEqual({
      metadata: {
        name: 'edge-a-1',
        uid: node.metadata!.uid,
        resourceVersion: '4711',
        labels: { 'edgemesh.io/site': 'edge-a' },
        annotations: { 'edgemesh.io/peer-id': '12D3KooW' },
      },
      spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] },
      status: {
        addresses: [
          { type: 'InternalIP', address: '192.168.10.11' },
          { type: 'ExternalIP', address: '203.0.113.7' },
        ],
      },
    });
    expect(JSON.stringify(trimNode(node)).length).toBeLessThan(JSON.stringify(node).length / 2);
  });

  it('leaves out label and annotation maps without an edgemesh.io/ key, and a spec without pod CIDRs', () => {
    const trimmed = trimNode({
      metadata: { name: 'plain', labels: { 'kubernetes.io/os': 'linux' }, annotations: { a: 'b' } },
      spec: { providerID: 'kind://plain' },
    });
    expect(trimmed).toEqual({ metadata: { name: 'plain' } });
  });

  it('copes with a Node that has no spec, no status and no labels', () => {
    expect(trimNode({ metadata: { name: 'bare' } })).toEqual({ metadata: { name: 'bare' } });
    expect(trimNode({})).toEqual({ metadata: {} });
  });

  it('keeps the deletion time of a Node being deleted', () => {
    const deletionTimestamp = new Date('2026-11-30T12:00:00Z');
    expect(trimNode({ metadata: { name: 'x', deletionTimestamp } }).metadata?.deletionTimestamp).toBe(
      deletionTimestamp,
    );
  });
});
