// `edgemesh-cni uninstall`: removes from the host everything the agent created — pod
// routes (TUN and host-gw), the TUN, the bridge and the pod veths on it, the masquerade
// chain, the conflist, the CNI client, the sockets and the subnet file. Leases and the
// node key stay (a reinstall keeps every pod IP and the peer ID) unless `purge` is set.
// IP forwarding is left on: other software on the host may rely on it.

import { readdir, rm, rmdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { ownedHostVeths } from '../cni/links.ts';
import { removeMasquerade } from '../cni/masquerade.ts';
import { iproute2HostNet } from '../common/host-net/index.ts';
import { type AgentConfig, agentFiles } from './config.ts';
import { reconcileRoutes, removeFallbackRoutes } from './host-routes.ts';

export interface UninstallReport {
  removed: string[];
}

function alive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function uninstall(cfg: AgentConfig, opts: { purge?: boolean } = {}): Promise<UninstallReport> {
  const files = agentFiles(cfg);
  if ((await alive(files.controlSocket)) || (await alive(files.cniSocket))) {
    throw new Error(`the agent is still running (${cfg.paths.runDir}); stop it (delete the DaemonSet) first`);
  }
  const removed: string[] = [];
  const net = iproute2HostNet();
  const { removed: routes } = await reconcileRoutes([], cfg.clusterCidrs, net);
  for (const r of routes) removed.push(`route ${r.dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}`);
  for (const r of await removeFallbackRoutes(cfg.clusterCidrs, net)) removed.push(`route ${r}`);
  if (await net.deleteLink(cfg.tun.name)) removed.push(`interface ${cfg.tun.name}`);
  if (await net.linkExists(cfg.bridge.name)) {
    // Only the pod veths the plugin made; another port someone enslaved is just released with the bridge.
    for (const port of await ownedHostVeths(net, cfg.bridge.name)) {
      if (await net.deleteLink(port)) removed.push(`veth ${port}`);
    }
    if (await net.deleteLink(cfg.bridge.name)) removed.push(`interface ${cfg.bridge.name}`);
  }
  await removeMasquerade();
  removed.push('masquerade chain EDGEMESH-MASQ');
  for (const path of [files.conflist, files.cniClient, files.cniSocket, files.controlSocket, files.subnetInfo]) {
    const existed = await rm(path).then(
      () => true,
      () => false,
    );
    if (existed) removed.push(path);
  }
  if (opts.purge) {
    await rm(files.leaseDir, { recursive: true, force: true });
    await rm(files.nodeKey, { force: true });
    removed.push(files.leaseDir, files.nodeKey);
    // The directories themselves only when nothing else lives there.
    for (const dir of [cfg.paths.stateDir, cfg.paths.runDir]) {
      if ((await readdir(dir).catch(() => ['?'])).length === 0) await rmdir(dir).catch(() => undefined);
    }
  }
  return { removed };
}
