// The public surface of ipam/ for cni/ and agent/.
export * from './cidr.ts';
export { IpamError } from './errors.ts';
export { type BlockUsage, LeaseStore, type LeaseStoreOptions } from './lease-store.ts';
export {
  blockObjectName,
  type ClaimNodeBlocksOptions,
  claimNodeBlocks,
  IPAM_CONDITION,
  IPAM_GROUP,
  IPAM_KIND,
  IPAM_PLURAL,
  IPAM_VERSION,
  releaseNodeBlocks,
} from './node-blocks.ts';
export type { IpFamily, Lease, LeasedIp, NodeBlock } from './types.ts';
