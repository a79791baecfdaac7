// TUN read/write throughput with and without GSO offloads.
// Two namespaces, one TUN each (both opened by this process), joined by a JS relay that
// copies every batch read from one TUN into the other: iperf3 TCP single stream A → B.
// With offloads the relay moves up-to-64 KiB super-packets; without, MTU-sized packets.
// Prints Gbit/s per mode, the ratio, and this process's CPU seconds per GB moved.
// Also times host route set-up: 1,000 routes with one `ip -batch` vs one `ip` per route.
// Run (root): node bench/dataplane-tun.ts [--seconds 5] [--rounds 2]
import { parseArgs } from 'node:util';
import { run } from '../common/exec.ts';
import { applyRoutes, configureInterface, ensureRoute, type RouteSpec } from '../common/host-net/index.ts';
import { createNetns, deleteNetns, runPrefix } from '../common/netns.ts';
import { TunDevice } from '../dataplane/tun-device.ts';
import { iperfClient, startIperfServer, stopProcess } from './lib/iperf.ts';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '5' }, rounds: { type: 'string', default: '2' } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const MTU = 1500;

const prefix = runPrefix('embt');
const nsA = `${prefix}a`;
const nsB = `${prefix}b`;

interface Sample {
  gbps: number;
  cpuPerGB: number;
  superShare: number;
  avgPacket: number;
  perBatch: number;
}

async function measure(offload: boolean, round: number): Promise<Sample> {
  const tag = `${offload ? 'o' : 'p'}${round}`;
  const a = TunDevice.open({ name: `${prefix}${tag}a`, netns: nsA, offload, mtu: MTU });
  const b = TunDevice.open({ name: `${prefix}${tag}b`, netns: nsB, offload, mtu: MTU });
  try {
    await configureInterface({ dev: a.name, address: '10.88.0.1/32', netns: nsA });
    await configureInterface({ dev: b.name, address: '10.88.0.2/32', netns: nsB });
    await ensureRoute({ dst: '10.88.0.2', dev: a.name }, { netns: nsA });
    await ensureRoute({ dst: '10.88.0.1', dev: b.name }, { netns: nsB });
    a.onBatch((batch) => b.write(batch));
    b.onBatch((batch) => a.write(batch));
    const server = await startIperfServer(nsB);
    try {
      const cpu0 = process.cpuUsage();
      const r = await iperfClient({ netns: nsA, server: '10.88.0.2', seconds });
      const cpu = process.cpuUsage(cpu0);
      const gb = (r.gbps * seconds) / 8;
      const s = a.stats();
      return {
        gbps: r.gbps,
        cpuPerGB: (cpu.user + cpu.system) / 1e6 / gb,
        superShare: s.rxSuperPackets / Math.max(1, s.rxPackets),
        avgPacket: s.rxBytes / Math.max(1, s.rxPackets),
        perBatch: s.rxPackets / Math.max(1, s.rxBatches),
      };
    } finally {
      await stopProcess(server);
    }
  } finally {
    a.close();
    b.close();
  }
}

/** ms for 1,000 routes: one `ip -batch`, and one `ip` process per route (200 timed, scaled). */
async function measureRoutes(): Promise<{ batchMs: number; singleMs: number }> {
  const dev = `${prefix}r`;
  await run('ip', ['-n', nsA, 'tuntap', 'add', 'dev', dev, 'mode', 'tun']);
  await configureInterface({ dev, address: '10.89.0.1/32', netns: nsA });
  const routes = (base: number, n: number): RouteSpec[] =>
    Array.from({ length: n }, (_, i) => ({ dst: `10.${base + (i >> 8)}.${i & 255}.0/24`, dev, src: '10.89.0.1' }));
  const batch = routes(100, 1000);
  let t0 = performance.now();
  await applyRoutes({ replace: batch }, { netns: nsA });
  const batchMs = performance.now() - t0;
  const single = routes(120, 200);
  t0 = performance.now();
  for (const r of single) await ensureRoute(r, { netns: nsA });
  const singleMs = ((performance.now() - t0) * 1000) / single.length;
  await run('ip', ['-n', nsA, 'link', 'del', dev]);
  return { batchMs, singleMs };
}

function mean(xs: number[]): number {
  return xs.reduce((s, x) => s + x, 0) / xs.length;
}

async function main(): Promise<void> {
  await createNetns(nsA);
  await createNetns(nsB);
  const on: Sample[] = [];
  const off: Sample[] = [];
  let routes: { batchMs: number; singleMs: number };
  try {
    for (let r = 0; r < rounds; r++) {
      on.push(await measure(true, r));
      off.push(await measure(false, r));
    }
    routes = await measureRoutes();
  } finally {
    await deleteNetns(nsA);
    await deleteNetns(nsB);
  }
  const line = (name: string, xs: Sample[]) =>
    `${name.padEnd(12)} ${mean(xs.map((x) => x.gbps)).toFixed(2)} Gbit/s  ` +
    `${mean(xs.map((x) => x.cpuPerGB)).toFixed(2)} CPU s/GB (relay process)  ` +
    `avg packet ${mean(xs.map((x) => x.avgPacket)).toFixed(0)} B  super-packets ${(100 * mean(xs.map((x) => x.superShare))).toFixed(0)}%  ` +
    `${mean(xs.map((x) => x.perBatch)).toFixed(1)} packets/batch  ` +
    `[${xs.map((x) => x.gbps.toFixed(2)).join(', ')}]`;
  console.log(`TUN↔TUN through a JS relay, iperf3 TCP 1 stream, ${seconds} s × ${rounds} rounds, MTU ${MTU}`);
  console.log(line('offload on', on));
  console.log(line('offload off', off));
  console.log(`ratio on/off: ${(mean(on.map((x) => x.gbps)) / mean(off.map((x) => x.gbps))).toFixed(2)}x`);
  console.log(
    `host routes, 1000: ip -batch ${routes.batchMs.toFixed(0)} ms; one ip per route ~${routes.singleMs.toFixed(0)} ms ` +
      `(200 timed, scaled) = ${(routes.singleMs / routes.batchMs).toFixed(0)}x slower`,
  );
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void Promise.all([deleteNetns(nsA), deleteNetns(nsB)]).finally(() => process.exit(130));
  });
}
await main();
