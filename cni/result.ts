// The ADD result, built once in the newest format and converted to the version the runtime
// asked for (0.3.x and 0.4.0 carry `version` in each IP entry; 1.1.0 adds interface `mtu`).
import type { Lease } from '../ipam/types.ts';
import type { Dns } from './config.ts';
import { type CniVersion, compareVersions } from './spec.ts';

export interface ResultInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
}
export interface ResultIp {
  address: string;
  gateway?: string;
  interface?: number;
  version?: '4' | '6';
}
export interface ResultRoute {
  dst: string;
  gw?: string;
}
export interface CniResult {
  cniVersion: string;
  interfaces?: ResultInterface[];
  ips?: ResultIp[];
  routes?: ResultRoute[];
  dns?: Dns;
}

export interface AttachmentView {
  lease: Lease;
  bridge: { name: string; mac: string };
  host: { name: string; mac: string };
  pod: { name: string; mac: string; netns: string };
  mtu: number;
  dns?: Dns;
}

/** The index of the pod interface in `interfaces`: ips[].interface points at it. */
export const POD_INTERFACE_INDEX = 2;

export function buildResult(view: AttachmentView, cniVersion: CniVersion): CniResult {
  const withMtu = compareVersions(cniVersion, '1.1.0') >= 0;
  const legacyIps = compareVersions(cniVersion, '1.0.0') < 0;
  const iface = (i: ResultInterface): ResultInterface => (withMtu ? { ...i, mtu: view.mtu } : i);
  const result: CniResult = {
    cniVersion,
    interfaces: [
      iface({ name: view.bridge.name, mac: view.bridge.mac }),
      iface({ name: view.host.name, mac: view.host.mac }),
      iface({ name: view.pod.name, mac: view.pod.mac, sandbox: view.pod.netns }),
    ],
    ips: view.lease.ips.map((ip) => ({
      ...(legacyIps ? { version: String(ip.family) as '4' | '6' } : {}),
      address: `${ip.address}/${ip.prefixLength}`,
      gateway: ip.gateway,
      interface: POD_INTERFACE_INDEX,
    })),
    routes: view.lease.ips.map((ip) => ({ dst: ip.family === 4 ? '0.0.0.0/0' : '::/0', gw: ip.gateway })),
  };
  if (view.dns && Object.keys(view.dns).length > 0) result.dns = view.dns;
  return result;
}

/** Reads a prevResult of any supported version into the common shape (for CHECK). */
export function readPrevResult(prev: Record<string, unknown>): CniResult {
  const list = <T>(v: unknown): T[] => (Array.isArray(v) ? (v as T[]) : []);
  return {
    cniVersion: String(prev.cniVersion ?? ''),
    interfaces: list<ResultInterface>(prev.interfaces),
    ips: list<ResultIp>(prev.ips),
    routes: list<ResultRoute>(prev.routes),
  };
}
