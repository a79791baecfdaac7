// The dataplane's public surface for agent/ and overlay/ (overlay/ uses only the frame codec).
export * from './checksum.ts';
export * from './forwarder.ts';
export * from './frame-codec.ts';
export * from './packet.ts';
export * from './route-table.ts';
export * from './segmentation.ts';
export * from './types.ts';
