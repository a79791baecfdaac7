// What the container runtime finds on the host: the network configuration list it loads
// from the CNI conf dir, the thin client it executes from the CNI bin dir, and a subnet
// file (like flannel's subnet.env) for operators and tools. All written atomically and
// only when changed, so a restarting agent does not make the runtime reload for nothing.
import { access, constants, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { type CniVersion, compareVersions, SUPPORTED_VERSIONS } from '../cni/spec.ts';
import { writeFileAtomicIfChanged } from '../common/atomic-file.ts';
import type { NodeBlock } from '../ipam/types.ts';

export const CONFLIST_NAME = '10-edgemesh.conflist';
export const NETWORK_NAME = 'edgemesh';
export const CLIENT_NAME = 'edgemesh';

/** Where `npm run build:native` puts the static thin client. */
export const BUILT_CLIENT = fileURLToPath(new URL('../build/edgemesh', import.meta.url));

async function executable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The conflist's `cniVersion` when the operator sets none. Runtimes built on libcni before
 * 1.2 (containerd 1.6/1.7, CRI-O before 1.30, podman 4) refuse any result newer than 1.0.0,
 * so 1.0.0 is what every runtime in use accepts; `cniVersions` (spec 1.1) offers the newer
 * versions to the runtimes that read it, and those pick the highest they support.
 */
export const DEFAULT_CONFLIST_VERSION = '1.0.0' satisfies CniVersion;

/**
 * The conflist: edgemesh first (it creates the interface and IP), then `portmap` for
 * hostPort when the host has the reference plugin, as flannel and calico ship it.
 */
export async function buildConflist(opts: {
  socketPath: string;
  cniBinDir: string;
  cniVersion?: CniVersion;
}): Promise<Record<string, unknown>> {
  const cniVersion = opts.cniVersion ?? DEFAULT_CONFLIST_VERSION;
  const plugins: Record<string, unknown>[] = [{ type: CLIENT_NAME, socket: opts.socketPath }];
  if (await executable(`${opts.cniBinDir}/portmap`)) {
    plugins.push({ type: 'portmap', capabilities: { portMappings: true }, snat: true });
  }
  const cniVersions = SUPPORTED_VERSIONS.filter((v) => compareVersions(v, cniVersion) >= 0);
  return { cniVersion, ...(cniVersions.length > 1 ? { cniVersions } : {}), name: NETWORK_NAME, plugins };
}

export async function writeConflist(path: string, conflist: Record<string, unknown>): Promise<boolean> {
  return writeFileAtomicIfChanged(path, `${JSON.stringify(conflist, null, 2)}\n`, 0o644);
}

/** Copies the thin client into the CNI bin dir (atomically: a runtime may be executing it). */
export async function installCniClient(target: string, source = BUILT_CLIENT): Promise<boolean> {
  let bytes: Buffer;
  try {
    bytes = await readFile(source);
  } catch (err) {
    throw new Error(
      `the CNI client ${source} is missing (${(err as NodeJS.ErrnoException).code}): build it with \`npm run build:native\``,
    );
  }
  return writeFileAtomicIfChanged(target, bytes, 0o755);
}

export interface SubnetInfo {
  node: string;
  site: string;
  clusterCidrs: string[];
  blocks: NodeBlock[];
  tunMtu: number;
  bridgeMtu: number;
}

export async function writeSubnetInfo(path: string, info: SubnetInfo): Promise<boolean> {
  return writeFileAtomicIfChanged(path, `${JSON.stringify(info, null, 2)}\n`, 0o644);
}
