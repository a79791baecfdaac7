// The dataplane's public surface for agent/ and overlay/ (overlay/ uses only the frame codec).
export * from './checksum.ts';
export * from './forwarder.ts';
export * from './frame-codec.ts';
export * from './host-net.ts';
export * from './packet.ts';
export * from './pcap.ts';
export * from './route-table.ts';
export * from './segmentation.ts';
export * from './tun-device.ts';
export * from './types.ts';
export * from './udp-link.ts';
export * from './udp-mtu.ts';
export * from './udp-session.ts';
export * from './vnet-header.ts';
