// Host networking, one home: links, addresses, routes, namespaces and the forwarding switches,
// over iproute2 or (for the per-pod operations) the netlink helper. Nothing else in the
// product starts `ip`.
export * from './addresses.ts';
export * from './host-net.ts';
export { ip, ipBatch, type NetnsOption } from './iproute2.ts';
export { LinkVanishWatch, listedLinks } from './link-vanish.ts';
export * from './links.ts';
export * from './namespaces.ts';
export * from './netlink.ts';
export { EEXIST, HelperFailedError, NetlinkError, type NetlinkHelperCounters } from './netlink-helper.ts';
export * from './routes.ts';
export * from './sysctl.ts';
