// The host networking interface: links, addresses and routes of one network namespace, behind
// one shape whatever carries the requests. Two backends: iproute2 (every operation, batched
// where it matters) and netlink (common/host-net/netlink.ts: the long-lived C helper for the
// per-pod operations it covers, iproute2 for the rest and whenever the helper fails).
import { CommandError } from '../exec.ts';
import { configureInterface, mtuOfInterfaceWith, removeAddress } from './addresses.ts';
import { isExisting, type NetnsOption } from './iproute2.ts';
import {
  type BridgeSpec,
  configurePod,
  createVethPair,
  deleteLink,
  ensureBridge,
  linkExists,
  linkIsUp,
  listLinks,
  type PodLinkState,
  type PodSpec,
  readPodLink,
  type VethSpec,
  vethPorts,
} from './links.ts';
import { EEXIST, NetlinkError } from './netlink-helper.ts';
import {
  applyRoutes,
  ensureRoute,
  ensureUnreachableRoute,
  type KernelRoute,
  listRoutes,
  listTableRoutes,
  type RouteSpec,
  removeRoute,
  removeUnreachableRoute,
  routeTowards,
} from './routes.ts';

export interface HostNetCounters {
  /** Netlink helper processes started. */
  helperStarts: number;
  /** Netlink helper processes that died or hung. */
  helperFailures: number;
  /** Operations done with iproute2 because the helper had failed. */
  iproute2Fallbacks: number;
}

export interface HostNet {
  /** The named namespace it acts in; undefined: the calling process's. */
  readonly netns: string | undefined;
  readonly backend: 'iproute2' | 'netlink';

  // Links
  listLinks(): Promise<string[]>;
  linkExists(name: string): Promise<boolean>;
  /** True when the link exists and is administratively up. */
  linkIsUp(name: string): Promise<boolean>;
  /** Creates the bridge if needed; sets its MAC (at creation), MTU, addresses and up. */
  ensureBridge(spec: BridgeSpec): Promise<void>;
  /** The veth pair (far end born in the pod's namespace), then the pod side's addresses and routes. */
  attachPod(veth: VethSpec, pod: PodSpec): Promise<void>;
  /** The veth ports of a bridge (none when it does not exist). */
  vethPorts(bridge: string): Promise<string[]>;
  /** Deletes a link; false when it was not there. Resolves once it is gone from the listing. */
  deleteLink(name: string): Promise<boolean>;
  /** The pod side of an attachment as it is now (`netns` is a path); undefined when absent. */
  readPodLink(netns: string, ifname: string): Promise<PodLinkState | undefined>;

  // Addresses (and the link settings that go with them)
  configureInterface(opts: { dev: string; address?: string | string[]; mtu?: number; up?: boolean }): Promise<void>;
  removeAddress(opts: { dev: string; address: string }): Promise<void>;
  /** The MTU of the interface that carries `address`; undefined when none does. */
  mtuOfInterfaceWith(address: string): Promise<number | undefined>;

  // Routes
  ensureRoute(r: RouteSpec): Promise<void>;
  removeRoute(r: RouteSpec): Promise<void>;
  /** Many changes in one process; throws naming the refused lines after applying the rest. */
  applyRoutes(changes: { replace?: readonly RouteSpec[]; remove?: readonly RouteSpec[] }): Promise<void>;
  listRoutes(dev: string, opts?: { table?: string | number }): Promise<RouteSpec[]>;
  listTableRoutes(opts?: { table?: string | number; dev?: string }): Promise<KernelRoute[]>;
  routeTowards(address: string): Promise<{ dev?: string; via?: string } | undefined>;
  ensureUnreachableRoute(cidr: string, metric: number): Promise<void>;
  removeUnreachableRoute(cidr: string, metric: number): Promise<boolean>;

  counters(): HostNetCounters;
  /** Stops what the backend keeps running (the netlink helper). Interfaces stay as they are. */
  close(): void;
}

/** A refusal by the kernel (or by iproute2), from either backend: not a bug in the caller. */
export function isHostNetRefusal(err: unknown): boolean {
  return err instanceof CommandError || err instanceof NetlinkError;
}

/** The kernel refused because the object exists already (EEXIST), from either backend. */
export function isAlreadyExists(err: unknown): boolean {
  return isExisting(err) || (err instanceof NetlinkError && err.errno === EEXIST);
}

/** Every operation through iproute2 processes, in `netns` (named) or the caller's namespace. */
export function iproute2HostNet(opts: NetnsOption = {}): HostNet {
  const ns: NetnsOption = opts.netns ? { netns: opts.netns } : {};
  return {
    netns: opts.netns,
    backend: 'iproute2',
    listLinks: () => listLinks(ns),
    linkExists: (name) => linkExists(name, ns),
    linkIsUp: (name) => linkIsUp(name, ns),
    ensureBridge: (spec) => ensureBridge(spec, ns),
    attachPod: async (veth, pod) => {
      await createVethPair(veth, ns);
      await configurePod(pod);
    },
    vethPorts: (bridge) => vethPorts(bridge, ns),
    deleteLink: (name) => deleteLink(name, ns),
    readPodLink: (netns, ifname) => readPodLink(netns, ifname),
    configureInterface: (o) => configureInterface({ ...o, ...ns }),
    removeAddress: (o) => removeAddress({ ...o, ...ns }),
    mtuOfInterfaceWith: (address) => mtuOfInterfaceWith(address, ns),
    ensureRoute: (r) => ensureRoute(r, ns),
    removeRoute: (r) => removeRoute(r, ns),
    applyRoutes: (changes) => applyRoutes(changes, ns),
    listRoutes: (dev, o = {}) => listRoutes(dev, { ...o, ...ns }),
    listTableRoutes: (o = {}) => listTableRoutes({ ...o, ...ns }),
    routeTowards: (address) => routeTowards(address, ns),
    ensureUnreachableRoute: (cidr, metric) => ensureUnreachableRoute(cidr, metric, ns),
    removeUnreachableRoute: (cidr, metric) => removeUnreachableRoute(cidr, metric, ns),
    counters: () => ({ helperStarts: 0, helperFailures: 0, iproute2Fallbacks: 0 }),
    close: () => undefined,
  };
}
