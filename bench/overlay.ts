// Overlay paths side by side, in one run on the NAT lab (relay with a public address,
// two sites each behind its own MASQUERADE router):
//   direct       node A → relay node (public address, dialled directly)
//   relayed      node A → node B through the relay (circuit relay v2, limits off)
//   hole-punched node A → node B after our TCP simultaneous-open punch
// One tunnel stream, 64 KiB frames sent as fast as the bounded queue accepts them,
// receiver counts bytes (no checksums). Also: hole-punch time (signal → upgraded conn).
// Run (root): node bench/overlay.ts [--seconds 5] [--rounds 2]
// The lab harness lives in test/support (shared with the overlay integration tests).
import { parseArgs } from 'node:util';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../test/support/overlay-cluster.ts';
import type { OverlayPeerProcess } from '../test/support/overlay-peer-client.ts';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '5' }, rounds: { type: 'string', default: '2' } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const FRAME = 64 * 1024;

interface Stats {
  rx: Record<string, { bytes: number }>;
  status: Array<{ node: string; path: string; rttMs?: number }>;
  counters: { punch: { lastDurationMs?: number } };
}

async function throughput(from: OverlayPeerProcess, to: OverlayPeerProcess, toName: string, fromName: string) {
  await from.request('connect', { node: toName });
  const before = (await to.request<Stats>('stats')).rx[fromName]?.bytes ?? 0;
  const t0 = Date.now();
  const sent = await from.request<{ bytes: number }>(
    'blast',
    { node: toName, seconds, size: FRAME },
    (seconds + 30) * 1000,
  );
  // Count until everything accepted by the link has arrived (no loss on a healthy path).
  await waitFor(
    'receiver caught up',
    async () => ((await to.request<Stats>('stats')).rx[fromName]?.bytes ?? 0) - before >= sent.bytes,
    30_000,
  );
  const ms = Date.now() - t0;
  const status = (await from.request<Stats>('stats')).status.find((s) => s.node === toName);
  return { gbps: (sent.bytes * 8) / ms / 1e6, path: status?.path ?? '?', rttMs: status?.rttMs };
}

let cluster: OverlayCluster | undefined;
const cleanup = async () => {
  await cluster?.destroy();
  process.exit(130);
};
process.once('SIGINT', cleanup);
process.once('SIGTERM', cleanup);

const results: Record<string, number[]> = { direct: [], relayed: [], 'hole-punched': [] };
const rtts: Record<string, number[]> = { direct: [], relayed: [], 'hole-punched': [] };
const punchMs: number[] = [];
try {
  for (let round = 1; round <= rounds; round++) {
    cluster = await createOverlayCluster({ autoPunch: false, verify: false });
    const c = cluster;
    const direct = await throughput(c.a, c.relay, 'relay', 'a');
    if (direct.path !== 'direct') throw new Error(`expected direct path to the relay, got ${direct.path}`);
    const relayed = await throughput(c.a, c.b, 'b', 'a');
    if (relayed.path !== 'relayed') throw new Error(`expected relayed path, got ${relayed.path}`);
    const t0 = Date.now();
    const path = await c.a.request<string>('punch', { node: 'b' }, 30_000);
    const punchWall = Date.now() - t0;
    if (path !== 'hole-punched') throw new Error(`hole punch failed: ${path}`);
    const punched = await throughput(c.a, c.b, 'b', 'a');
    if (punched.path !== 'hole-punched') throw new Error(`expected hole-punched path, got ${punched.path}`);
    results.direct!.push(direct.gbps);
    results.relayed!.push(relayed.gbps);
    results['hole-punched']!.push(punched.gbps);
    for (const [k, v] of [
      ['direct', direct],
      ['relayed', relayed],
      ['hole-punched', punched],
    ] as const) {
      if (v.rttMs !== undefined) rtts[k]!.push(v.rttMs);
    }
    punchMs.push(punchWall);
    console.log(
      `round ${round}: direct ${direct.gbps.toFixed(2)} Gbit/s, relayed ${relayed.gbps.toFixed(2)} Gbit/s, ` +
        `hole-punched ${punched.gbps.toFixed(2)} Gbit/s, punch ${punchWall} ms`,
    );
    await c.destroy();
    cluster = undefined;
  }
} catch (err) {
  console.error(cluster?.logs(60));
  throw err;
} finally {
  await cluster?.destroy();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
console.log(`\noverlay stream throughput, ${FRAME / 1024} KiB frames, ${seconds} s × ${rounds} rounds (median):`);
for (const k of Object.keys(results)) {
  const rtt = rtts[k]!.length ? ` keepalive RTT ${median(rtts[k]!)} ms` : '';
  console.log(`  ${k.padEnd(13)} ${median(results[k]!).toFixed(2)} Gbit/s${rtt}`);
}
console.log(`  hole-punch time (request → tunnel on the punched connection): ${median(punchMs)} ms`);
