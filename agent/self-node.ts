// This node's own identity in the cluster: its Node object (registered by the kubelet, or
// by the lab), and what the config leaves to it: site (label), node IP (InternalIP) and
// relay role (label `edgemesh.io/relay=true`, so operators pick relays with kubectl label).
import { isIP } from 'node:net';
import type { V1Node } from '@kubernetes/client-node';
import type { Logger } from '../common/log.ts';
import { Labels } from '../overlay/annotations.ts';
import type { AgentConfig } from './config.ts';
import type { NodeApi } from './kube.ts';

/** The node's InternalIP from its status (what the kubelet reports), if any. */
export function internalIpOf(node: V1Node): string | undefined {
  return node.status?.addresses?.find((a) => a.type === 'InternalIP' && isIP(a.address) !== 0)?.address;
}

export interface SelfIdentity {
  site: string;
  nodeIp: string;
  relay: boolean;
  /** Multiaddrs to announce: the config's, else one per ExternalIP of the Node (none behind NAT). */
  announce: string[];
}

function tcpPortOf(listen: string[]): string {
  return /\/tcp\/(\d+)/.exec(listen[0] ?? '')?.[1] ?? '4001';
}

/** Reads the own Node, retrying while it does not exist yet (kubelet still registering). */
export async function waitForOwnNode(api: NodeApi, name: string, log: Logger, signal: AbortSignal): Promise<V1Node> {
  let delay = 500;
  for (;;) {
    try {
      return await api.readNode(name);
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (signal.aborted) throw err;
      log.warn(
        { node: name, code, err: (err as Error).message.split('\n')[0] },
        code === 404 ? 'own Node does not exist yet; waiting' : 'cannot read own Node; retrying',
      );
    }
    await new Promise((r) => setTimeout(r, delay));
    if (signal.aborted) throw new Error('agent stopped while waiting for its Node');
    delay = Math.min(delay * 2, 10_000);
  }
}

export function resolveIdentity(cfg: AgentConfig, node: V1Node): SelfIdentity {
  const labels = node.metadata?.labels ?? {};
  const nodeIp = cfg.nodeIp ?? internalIpOf(node);
  if (!nodeIp) {
    throw new Error(
      `node ${cfg.nodeName}: no nodeIp configured and the Node has no InternalIP address; set nodeIp or EDGEMESH_NODE_IP`,
    );
  }
  return {
    site: cfg.site ?? labels[Labels.site] ?? cfg.nodeName,
    nodeIp,
    relay: cfg.relay ?? labels[Labels.relay] === 'true',
    announce:
      cfg.overlay.announce.length > 0
        ? cfg.overlay.announce
        : (node.status?.addresses ?? [])
            .filter((a) => a.type === 'ExternalIP' && isIP(a.address) !== 0)
            .map((a) => `/${isIP(a.address) === 6 ? 'ip6' : 'ip4'}/${a.address}/tcp/${tcpPortOf(cfg.overlay.listen)}`),
  };
}
