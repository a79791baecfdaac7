// Emulated peer Nodes for the benchmarks that measure the agent with many peers
// (bench/control-plane.ts, bench/agent-memory.ts): Node objects as a kubelet registers them
// with the node IPAM controller (spec.podCIDRs equal to the CIDR the annotation claims,
// addresses, conditions, nodeInfo, capacity, an image list, managedFields: about 9 KB each),
// carrying edgemesh's annotations, each with a peer ID of its own.
import { createHash } from 'node:crypto';
import type { V1Node } from '@kubernetes/client-node';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { KubeClient } from '../../common/kube/client.ts';
import { peerAnnotations } from '../../overlay/directory.ts';

/** Peer `i`: pod CIDR 10.(i/256).(i%256).0/24 (inside the cluster CIDR 10.0.0.0/8, distinct for every i < 65,536). */
export async function peerNode(i: number): Promise<V1Node> {
  const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString();
  // Peer i owns 10.(i/256).(i%256).0/24 inside the cluster CIDR 10.0.0.0/8, so every block
  // is distinct; the node IPAM controller assigned it (spec.podCIDRs), the agent annotates it.
  const cidr = `10.${Math.floor(i / 256) % 256}.${i % 256}.0/24`;
  const ip = `192.168.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`;
  const name = `peer-${i}`;
  const now = '2026-11-30T12:00:00Z';
  return {
    metadata: {
      name,
      labels: {
        'edgemesh.io/site': `site-${i % 50}`,
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'node.kubernetes.io/instance-type': 'edge-small',
      },
      annotations: {
        ...peerAnnotations({
          peerId,
          multiaddrs: [`/ip4/${ip}/tcp/4001`],
          podCidrs: [cidr],
          site: `site-${i % 50}`,
          nodeIp: ip,
          punchPort: 4002,
        }),
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
      managedFields: ['kubelet', 'kube-controller-manager', 'edgemesh'].map((manager) => ({
        manager,
        operation: 'Update',
        apiVersion: 'v1',
        time: new Date(now),
        fieldsType: 'FieldsV1',
        fieldsV1: {
          'f:metadata': { 'f:annotations': { '.': {}, 'f:node.alpha.kubernetes.io/ttl': {} }, 'f:labels': { '.': {} } },
          'f:status': {
            'f:conditions': { 'k:{"type":"Ready"}': { '.': {}, 'f:lastHeartbeatTime': {}, 'f:status': {} } },
          },
        },
      })),
    },
    spec: { podCIDR: cidr, podCIDRs: [cidr] },
    status: {
      addresses: [
        { type: 'InternalIP', address: ip },
        { type: 'Hostname', address: name },
      ],
      capacity: { cpu: '4', memory: '8025072Ki', pods: '110', 'ephemeral-storage': '61202244Ki' },
      allocatable: { cpu: '4', memory: '7922672Ki', pods: '110', 'ephemeral-storage': '56403987978' },
      conditions: ['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready'].map((type) => ({
        type,
        status: type === 'Ready' ? 'True' : 'False',
        lastHeartbeatTime: new Date(now),
        lastTransitionTime: new Date(now),
        reason: type === 'Ready' ? 'KubeletReady' : `KubeletHasNo${type}`,
        message: type === 'Ready' ? 'kubelet is posting ready status' : `kubelet has no ${type}`,
      })),
      nodeInfo: {
        architecture: 'amd64',
        bootID: `b00t-${i}`,
        containerRuntimeVersion: 'containerd://1.7.24',
        kernelVersion: '6.1.0-28-amd64',
        kubeProxyVersion: 'v1.32.0',
        kubeletVersion: 'v1.32.0',
        machineID: `m${i}`,
        operatingSystem: 'linux',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        systemUUID: `uuid-${i}`,
      },
      // A small edge node's image cache: its digests dominate a real Node's size.
      images: Array.from({ length: 24 }, (_, k) => ({
        names: [
          `registry.example.com/team/app-${k}@sha256:${createHash('sha256').update(`${i}/${k}`).digest('hex')}`,
          `registry.example.com/team/app-${k}:v1.${k}.0`,
        ],
        sizeBytes: 10_000_000 + k * 1_000_003,
      })),
    },
  };
}

export async function createNodes(api: KubeClient, from: number, to: number): Promise<void> {
  const queue = Array.from({ length: to - from }, (_, k) => from + k);
  const worker = async () => {
    for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
      await api.request('POST', '/api/v1/nodes', { body: await peerNode(i) });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}
