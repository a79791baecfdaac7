// Links over iproute2, in as few processes as possible (each spawn costs milliseconds of pod
// start-up): one `ip -batch` creates a veth pair with its far end born inside the pod's
// namespace under its final name, and one `nsenter ... ip -batch` configures the pod side.
import { readFile } from 'node:fs/promises';
import { ip, ipBatch, ipBatchAt, isMissingDevice, type NetnsOption, parseJson } from './iproute2.ts';

export interface IfAddress {
  address: string;
  prefixLength: number;
  family: 4 | 6;
}

export interface BridgeSpec {
  name: string;
  mac: string;
  mtu: number;
  addresses: IfAddress[];
}

/** A veth pair: `host` (a port of `bridge`, up) whose peer is born in `netns` (a path) as `podIfname`. */
export interface VethSpec {
  host: string;
  hostMac: string;
  bridge: string;
  podIfname: string;
  podMac: string;
  netns: string;
  mtu: number;
}

/** The pod side of an attachment: addresses, link up and default routes inside `netns` (a path). */
export interface PodSpec {
  netns: string;
  ifname: string;
  addresses: IfAddress[];
  gateways: string[];
}

export interface PodLinkState {
  mac: string;
  mtu: number;
  up: boolean;
  addresses: string[];
  routes: { dst: string; gateway?: string; dev?: string }[];
}

/**
 * Interface names. In the caller's namespace from /proc/self/net/dev, which follows the
 * calling process's namespace (unlike /sys, which follows the mount) and costs no process.
 */
export async function listLinks(opts: NetnsOption = {}): Promise<string[]> {
  if (opts.netns) {
    return parseJson<{ ifname: string }>(await ip(['-j', 'link', 'show'], opts)).map((l) => l.ifname);
  }
  const text = await readFile('/proc/self/net/dev', 'utf8');
  return text
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0]?.trim() ?? '')
    .filter(Boolean);
}

export async function linkExists(name: string, opts: NetnsOption = {}): Promise<boolean> {
  return (await listLinks(opts)).includes(name);
}

/** True when `name` exists and is administratively up. */
export async function linkIsUp(name: string, opts: NetnsOption = {}): Promise<boolean> {
  try {
    const out = parseJson<{ flags?: string[] }>(await ip(['-j', 'link', 'show', 'dev', name], opts));
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
export async function ensureBridge(spec: BridgeSpec, opts: NetnsOption = {}): Promise<void> {
  const lines: string[] = [];
  if (!(await linkExists(spec.name, opts))) {
    // A fixed MAC: a bridge otherwise takes its lowest port's, which changes as pods come and go.
    lines.push(`link add ${spec.name} address ${spec.mac} type bridge`);
  }
  lines.push(`link set ${spec.name} mtu ${spec.mtu} up`);
  for (const a of spec.addresses) lines.push(addrLine(spec.name, a, 'replace'));
  await ipBatch(lines, opts);
}

export async function createVethPair(v: VethSpec, opts: NetnsOption = {}): Promise<void> {
  await ipBatch(
    [
      `link add ${v.host} address ${v.hostMac} mtu ${v.mtu} master ${v.bridge} up type veth ` +
        `peer name ${v.podIfname} address ${v.podMac} mtu ${v.mtu} netns ${v.netns}`,
    ],
    opts,
  );
}

/** Addresses, link up and default routes inside the pod's namespace, in one process. */
export async function configurePod(pod: PodSpec): Promise<void> {
  await ipBatchAt(pod.netns, [
    ...pod.addresses.map((a) => addrLine(pod.ifname, a, 'add')),
    `link set ${pod.ifname} up`,
    ...pod.gateways.map((gw) => `route replace default via ${gw} dev ${pod.ifname}`),
  ]);
}

/** The veth ports of `bridge` (none when the bridge does not exist). */
export async function vethPorts(bridge: string, opts: NetnsOption = {}): Promise<string[]> {
  let out: string;
  try {
    out = await ip(['-d', '-j', 'link', 'show', 'master', bridge], opts);
  } catch (err) {
    if (isMissingDevice(err)) return [];
    throw err;
  }
  return parseJson<{ ifname: string; linkinfo?: { info_kind?: string } }>(out)
    .filter((p) => p.linkinfo?.info_kind === 'veth')
    .map((p) => p.ifname);
}

/** Deletes a link; a link that is already gone is not an error (false). */
export async function deleteLink(name: string, opts: NetnsOption = {}): Promise<boolean> {
  try {
    await ip(['link', 'del', name], opts);
    return true;
  } catch (err) {
    if (isMissingDevice(err)) return false;
    throw err;
  }
}

/** What the pod's interface looks like now (for CHECK); undefined when it does not exist. */
export async function readPodLink(netns: string, ifname: string): Promise<PodLinkState | undefined> {
  let out: string;
  try {
    // `table all` is the one listing that covers both families; main-table routes carry no `table` key.
    out = await ipBatchAt(netns, [`addr show dev ${ifname}`, 'route show table all'], { json: true });
  } catch (err) {
    if (isMissingDevice(err)) return undefined;
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
