// Kernel switches under /proc/sys/net that host networking depends on.
import { writeFile } from 'node:fs/promises';

/** Turns on IP forwarding for the families in use (the node routes between bridge and TUN/LAN). */
export async function enableForwarding(families: Array<4 | 6>): Promise<void> {
  if (families.includes(4)) await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n');
  if (families.includes(6)) await writeFile('/proc/sys/net/ipv6/conf/all/forwarding', '1\n');
}
