// Interface plumbing with iproute2, in as few processes as possible (each spawn costs
// milliseconds of pod start-up): one `ip -batch` in the node's namespace creates the veth
// pair with its far end born inside the pod's namespace under its final name, and one
// `nsenter ... ip -batch` configures the pod side.
import { readFile, readlink, statfs } from 'node:fs/promises';
import { CommandError, ipBatch, run } from '../common/exec.ts';
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

export interface IfAddress {
  address: string;
  prefixLength: number;
  family: 4 | 6;
}

/**
 * Interface names in the current network namespace. /proc/self/net follows the calling
 * process's namespace (unlike /sys, which follows the mount), and costs no process.
 */
export async function listLinks(): Promise<string[]> {
  const text = await readFile('/proc/self/net/dev', 'utf8');
  return text
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0]?.trim() ?? '')
    .filter(Boolean);
}

export async function linkExists(name: string): Promise<boolean> {
  return (await listLinks()).includes(name);
}

/** True when `name` exists and is administratively up. */
export async function linkIsUp(name: string): Promise<boolean> {
  try {
    const out = JSON.parse(await run('ip', ['-j', 'link', 'show', 'dev', name])) as { flags?: string[] }[];
    return out[0]?.flags?.includes('UP') ?? false;
  } catch {
    return false;
  }
}

function addrLine(dev: string, a: IfAddress, verb: 'add' | 'replace'): string {
  // No duplicate address detection: the IPAM lease already guarantees uniqueness, and DAD
  // would hold the address "tentative" (unusable) for a second or more after pod start.
  return `addr ${verb} ${a.address}/${a.prefixLength} dev ${dev}${a.family === 6 ? ' nodad' : ''}`;
}

/** Creates the bridge if needed and makes sure it has the gateway addresses, MTU and is up. */
export async function ensureBridge(opts: {
  name: string;
  mac: string;
  mtu: number;
  addresses: IfAddress[];
}): Promise<void> {
  const lines: string[] = [];
  if (!(await linkExists(opts.name))) {
    // A fixed MAC: a bridge otherwise takes its lowest port's, which changes as pods come and go.
    lines.push(`link add ${opts.name} address ${opts.mac} type bridge`);
  }
  lines.push(`link set ${opts.name} mtu ${opts.mtu} up`);
  for (const a of opts.addresses) lines.push(addrLine(opts.name, a, 'replace'));
  await ipBatch(lines);
}

/** Creates host veth `host` (on `bridge`, up) whose peer is born in `netns` as `podIfname`. */
export async function createVethPair(opts: {
  host: string;
  hostMac: string;
  bridge: string;
  podIfname: string;
  podMac: string;
  netns: string;
  mtu: number;
}): Promise<void> {
  await ipBatch([
    `link add ${opts.host} address ${opts.hostMac} mtu ${opts.mtu} master ${opts.bridge} up type veth ` +
      `peer name ${opts.podIfname} address ${opts.podMac} mtu ${opts.mtu} netns ${opts.netns}`,
  ]);
}

/** Addresses, link up and default routes inside the pod's namespace, in one process. */
export async function configurePod(opts: {
  netns: string;
  ifname: string;
  addresses: IfAddress[];
  gateways: string[];
}): Promise<void> {
  const lines = [
    ...opts.addresses.map((a) => addrLine(opts.ifname, a, 'add')),
    `link set ${opts.ifname} up`,
    ...opts.gateways.map((gw) => `route replace default via ${gw} dev ${opts.ifname}`),
  ];
  await run('nsenter', [`--net=${opts.netns}`, 'ip', '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

/**
 * The host ends of pod veths this plugin made on `bridge`: veth ports of that bridge whose
 * name is one hostVethName makes. GC and uninstall delete only these — never another
 * port someone enslaved to the bridge, nor a similarly named interface elsewhere.
 */
export async function ownedHostVeths(bridge: string): Promise<string[]> {
  let out: string;
  try {
    out = await run('ip', ['-d', '-j', 'link', 'show', 'master', bridge]);
  } catch (err) {
    if (err instanceof CommandError && /does not exist|Cannot find device/.test(err.stderr)) return [];
    throw err;
  }
  const ports = (out.trim() ? JSON.parse(out) : []) as Array<{ ifname: string; linkinfo?: { info_kind?: string } }>;
  return ports.filter((p) => p.linkinfo?.info_kind === 'veth' && isHostVethName(p.ifname)).map((p) => p.ifname);
}

/** Deletes a link in the current namespace; a link that is already gone is not an error. */
export async function deleteLink(name: string): Promise<boolean> {
  try {
    await run('ip', ['link', 'del', name]);
    return true;
  } catch (err) {
    if (err instanceof CommandError && /Cannot find device|does not exist/.test(err.stderr)) return false;
    throw err;
  }
}

export interface PodLinkState {
  mac: string;
  mtu: number;
  up: boolean;
  addresses: string[];
  routes: { dst: string; gateway?: string; dev?: string }[];
}

/** What the pod's interface looks like now (for CHECK); undefined when it does not exist. */
export async function readPodLink(netns: string, ifname: string): Promise<PodLinkState | undefined> {
  let out: string;
  try {
    out = await run('nsenter', [`--net=${netns}`, 'ip', '-j', '-batch', '-'], {
      // `table all` is the one listing that covers both families; main-table routes carry no `table` key.
      input: `addr show dev ${ifname}\nroute show table all\n`,
    });
  } catch (err) {
    if (err instanceof CommandError && /does not exist|Cannot find device/.test(err.stderr)) return undefined;
    throw err;
  }
  const [addrJson, routesJson] = out.split('\n').filter(Boolean);
  const link = (
    JSON.parse(addrJson ?? '[]') as {
      address: string;
      mtu: number;
      flags: string[];
      addr_info: { local: string; prefixlen: number }[];
    }[]
  )[0];
  if (!link) return undefined;
  return {
    mac: link.address,
    mtu: link.mtu,
    up: link.flags.includes('UP'),
    addresses: link.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
    routes: (
      JSON.parse(routesJson ?? '[]') as { dst: string; gateway?: string; dev?: string; table?: string }[]
    ).filter((r) => r.table === undefined || r.table === 'main'),
  };
}
