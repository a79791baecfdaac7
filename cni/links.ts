// The CNI plugin's rules about links; the link operations themselves are host networking's
// (common/host-net/). A CNI_NETNS must really be a network namespace, and only the veths
// this plugin named are its own.
import { readlink, statfs } from 'node:fs/promises';
import type { HostNet } from '../common/host-net/index.ts';
import { isHostVethName } from './names.ts';
import { CniError, ErrorCode } from './spec.ts';

/** statfs(2) f_type of the namespace filesystem (linux/magic.h NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

/**
 * Refuses a CNI_NETNS that is not a network namespace with a CNI error naming it, before
 * the kernel answers a veth request with a bare "Invalid argument": a path that cannot be
 * opened is an I/O failure (5); a file that is not a namespace, or a namespace of another
 * kind (/proc/<pid>/ns/mnt), is an invalid CNI_NETNS (4).
 */
export async function assertNetworkNamespace(path: string): Promise<void> {
  let type: number;
  try {
    type = (await statfs(path)).type;
  } catch (err) {
    throw new CniError(ErrorCode.IoFailure, `cannot open network namespace ${path}`, (err as Error).message);
  }
  const hint = 'expected a network namespace such as /var/run/netns/<name> or /proc/<pid>/ns/net';
  if (type !== NSFS_MAGIC) {
    throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${path} is not a network namespace`, hint);
  }
  // /proc/<pid>/ns/* links name their kind ("net:[4026531833]"); a bind mount (ip netns) has no link.
  const link = await readlink(path).catch(() => undefined);
  if (link !== undefined && !link.startsWith('net:')) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `CNI_NETNS ${path} is a ${link.split(':')[0]} namespace, not a network namespace`,
      hint,
    );
  }
}

/**
 * The host ends of pod veths this plugin made on `bridge`: veth ports of that bridge whose
 * name is one hostVethName makes. GC and uninstall delete only these — never another
 * port someone enslaved to the bridge, nor a similarly named interface elsewhere.
 */
export async function ownedHostVeths(net: HostNet, bridge: string): Promise<string[]> {
  return (await net.vethPorts(bridge)).filter(isHostVethName);
}
