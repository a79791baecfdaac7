// The public surface of ipam/ for cni/ and agent/.
export * from './cidr.ts';
export { IpamError } from './errors.ts';
export { type BlockUsage, LeaseStore, type LeaseStoreOptions } from './lease-store.ts';
export type { IpFamily, Lease, LeasedIp, NodeBlock } from './types.ts';
