// The relayed stream fallback, circuit relay v2 against the relay's TCP splice, each against
// the stream's direct path in the same cluster and run. The overlay test cluster (namespaces:
// a public relay, a public member `pub`, A and B behind symmetric NATs so no TCP punch works,
// transport pinned to the stream); A blasts 64 KiB frames through its tunnel for `seconds`:
// to pub (stream direct) and to B (relayed). Run twice: the relay without a splice (the
// tunnel stays on the circuit) and with one (the tunnel moves onto the splice). Reports
// Gbit/s of frames B received, and the relay process's CPU seconds per GB.
// Run (root): node bench/stream-relay.ts [--seconds 4] [--rounds 2]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createOverlayCluster, type OverlayCluster, waitFor } from '../test/support/overlay-cluster.ts';
import type { OverlayPeerProcess } from '../test/support/overlay-peer-client.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '4' }, rounds: { type: 'string', default: '2' } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const log = (l: string) => console.log(`${new Date().toISOString().slice(11, 19)} ${l}`);

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The overlay process (`ip netns exec` execs it in place: the spawned child itself). */
function overlayPid(p: OverlayPeerProcess): number {
  return p.child.pid!;
}

async function blast(c: OverlayCluster, to: 'b' | 'pub'): Promise<{ gbps: number; relayCpuPerGb: number }> {
  const target = to === 'b' ? c.b : c.pub!;
  const rx = async () => (await target.request<{ rx: Record<string, { bytes: number }> }>('stats')).rx.a?.bytes ?? 0;
  const relayPid = overlayPid(c.relay);
  const before = await rx();
  const cpu0 = cpuSeconds(relayPid);
  const started = Date.now();
  await c.a.request('blast', { node: to, seconds, size: 65_536 });
  // Frames still in flight when the sender stops count too: wait until B's count settles.
  let last = -1;
  let now = await rx();
  while (now !== last) {
    last = now;
    await new Promise((r) => setTimeout(r, 300));
    now = await rx();
  }
  const ms = Date.now() - started - 300;
  const bytes = now - before;
  const cpu = cpuSeconds(relayPid) - cpu0;
  return { gbps: (bytes * 8) / (ms / 1000) / 1e9, relayCpuPerGb: cpu / (bytes / 1e9) };
}

async function measureCluster(splice: boolean): Promise<Record<string, number[]>> {
  log(`cluster ${splice ? 'with' : 'without'} the relay TCP splice: setting up`);
  const c = await createOverlayCluster({
    randomFullyA: true,
    randomFullyB: true,
    transport: 'stream',
    publicPeer: true,
    verify: false,
    splice,
  });
  try {
    await c.a.request('connect', { node: 'pub' });
    await c.a.request('connect', { node: 'b' });
    const remote = async () =>
      (await c.a.request<{ status: Array<{ node: string; remoteAddr?: string }> }>('stats')).status.find(
        (s) => s.node === 'b',
      )?.remoteAddr;
    if (splice)
      await waitFor('the tunnel on the splice', async () => !(await remote())?.includes('p2p-circuit'), 30_000);
    log(`A → B carried by ${await remote()}`);
    const out: Record<string, number[]> = { direct: [], relayed: [], relayCpu: [] };
    for (let r = 1; r <= rounds; r++) {
      const d = await blast(c, 'pub');
      const rel = await blast(c, 'b');
      log(
        `round ${r}: stream direct ${d.gbps.toFixed(2)} Gbit/s, relayed ${rel.gbps.toFixed(2)} Gbit/s (relay CPU ${rel.relayCpuPerGb.toFixed(1)} s/GB)`,
      );
      out.direct!.push(d.gbps);
      out.relayed!.push(rel.gbps);
      out.relayCpu!.push(rel.relayCpuPerGb);
    }
    return out;
  } finally {
    await c.destroy();
  }
}

const circuit = await measureCluster(false);
const spliced = await measureCluster(true);
const row = (name: string, m: Record<string, number[]>) => {
  const d = median(m.direct!);
  const r = median(m.relayed!);
  return `${name.padEnd(22)} direct ${d.toFixed(2)} Gbit/s, relayed ${r.toFixed(2)} Gbit/s = ${((100 * r) / d).toFixed(0)} % of direct; relay CPU ${median(m.relayCpu!).toFixed(1)} s/GB`;
};
console.log(`\nstream relayed vs direct, medians of ${rounds} rounds, ${seconds} s each (shared machine: noisy)`);
console.log(row('circuit relay v2', circuit));
console.log(row('relay TCP splice', spliced));
