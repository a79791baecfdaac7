// A CNI server without the rest of the agent: a LeaseStore, the plugin and the socket.
// For the CNI integration tests (the benchmark measures the whole agent), which run it inside a "node" namespace they
// created (`ip netns exec <node> node cni/standalone.ts ...`), so that every bridge, veth
// and iptables rule it makes lives and dies with that namespace. Prints "ready" when serving.
//   node cni/standalone.ts --socket S --state-dir D --block 10.244.1.0/24 [--block fd00::/64]
//        [--cluster-cidr 10.244.0.0/16 ...] [--bridge NAME] [--mtu N] [--no-masquerade]
//        [--netlink-helper /opt/cni/bin/edgemesh] [--counters FILE]
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { logger } from '../common/log.ts';
import { cidrFamily, gateway } from '../ipam/cidr.ts';
import { LeaseStore } from '../ipam/lease-store.ts';
import type { NodeBlock } from '../ipam/types.ts';
import { CniPlugin } from './plugin.ts';
import { startCniServer } from './server.ts';

const { values } = parseArgs({
  options: {
    socket: { type: 'string' },
    'state-dir': { type: 'string' },
    block: { type: 'string', multiple: true },
    'cluster-cidr': { type: 'string', multiple: true },
    bridge: { type: 'string' },
    mtu: { type: 'string' },
    'no-masquerade': { type: 'boolean' },
    /** The edgemesh binary to run as netlink helper (no process per pod); iproute2 without it. */
    'netlink-helper': { type: 'string' },
    /** Write the plugin's plumbing counters (helper starts/failures, iproute2 fallbacks) as JSON on exit. */
    counters: { type: 'string' },
  },
});
if (!values.socket || !values['state-dir'] || !values.block?.length) {
  console.error('usage: standalone.ts --socket PATH --state-dir DIR --block CIDR [--block CIDR] [--cluster-cidr CIDR]');
  process.exit(2);
}

const log = logger('cni');
const blocks: NodeBlock[] = values.block.map((cidr) => ({ family: cidrFamily(cidr), cidr, gateway: gateway(cidr) }));
const leases = await LeaseStore.open({ dir: values['state-dir'], blocks, logger: log });
const plugin = new CniPlugin({
  leases,
  blocks,
  clusterCidrs: values['cluster-cidr'] ?? [],
  masquerade: !values['no-masquerade'],
  logger: log,
  ...(values.bridge ? { bridgeName: values.bridge } : {}),
  ...(values.mtu ? { mtu: Number(values.mtu) } : {}),
  ...(values['netlink-helper'] ? { netlinkHelper: values['netlink-helper'] } : {}),
});
await plugin.start();
const server = await startCniServer({ socketPath: values.socket, plugin, logger: log });

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.close();
  plugin.close();
  await leases.close();
  if (values.counters) await writeFile(values.counters, JSON.stringify(plugin.plumbingCounters()));
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdout.write('ready\n');
