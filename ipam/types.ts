// IPAM's shared vocabulary, used by cni/ and agent/.

export type IpFamily = 4 | 6;

/** A pod CIDR owned by this node (one per configured IP family). */
export interface NodeBlock {
  family: IpFamily;
  /** Canonical CIDR, e.g. "10.244.3.0/24" or "fd00:10:244:3::/64". */
  cidr: string;
  /** First usable address of the block: the bridge's address and the pods' gateway. */
  gateway: string;
}

/** The address one pod interface got from one block. */
export interface LeasedIp {
  family: IpFamily;
  /** Plain address, e.g. "10.244.3.7". */
  address: string;
  prefixLength: number;
  gateway: string;
}

/** One attachment (CNI: containerId + ifname) and its addresses, one per family. */
export interface Lease {
  containerId: string;
  ifname: string;
  ips: LeasedIp[];
}
