// An endpoint-dependent NAT (edge-a: MASQUERADE --random-fully, a random public port per
// destination) facing a port-preserving one (edge-b): the edge-a node's mapping towards an
// edge-b node is known to nobody, so ordinary probing cannot punch. Birthday punching
// (overlay/birthday-punch.ts): the edge-a node probes the edge-b node's mapping from 256
// sockets, the edge-b node sprays probes at random ports of edge-a's public IP, one lands on
// one of the 256 mappings, and the pair goes udp-punched over the socket that won. Every
// cross-site node pair must be direct within 10 s of its first packet; the test prints the
// rate. CI runs EDGEMESH_BIRTHDAY_LABS cold starts (default 1, 4 pairs each); the 20-trial
// series is `node bench/nat-trials.ts`.
import { afterEach, describe, expect, it } from 'vitest';
import { type Lab, labUp } from '../../lab/lab.ts';
import { birthdayMetrics, waitForNatKinds } from '../../lab/nat-kinds.ts';
import { crossSitePairs, measureTimeToDirect, type PairResult } from '../../lab/time-to-direct.ts';
import { snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

const LABS = Number(process.env.EDGEMESH_BIRTHDAY_LABS ?? 1);
const DIRECT_WITHIN_MS = 10_000;

describe('lab up --nat edge-a=symmetric (edge-b masquerade): birthday punching', () => {
  let lab: Lab | undefined;

  afterEach(async () => {
    await lab?.down();
    lab = undefined;
  }, 120_000);

  it(`every edge-a ↔ edge-b pair is udp-punched within ${DIRECT_WITHIN_MS / 1000} s, ${LABS} cold start(s)`, async () => {
    expect(Number.isInteger(LABS) && LABS > 0, 'EDGEMESH_BIRTHDAY_LABS').toBe(true);
    const all: Array<PairResult & { lab: number }> = [];
    for (let n = 1; n <= LABS; n++) {
      const before = await snapshotHost();
      lab = await labUp({
        overrides: { nodesPerSite: 2, podsPerNode: 1, nat: { 'edge-a': 'symmetric' } },
        readyTimeoutMs: 120_000,
      });
      // The roles come from the NAT kinds the two sides offer: first packets once they are known.
      await waitForNatKinds(lab, { cloud: 'none', 'edge-a': 'endpoint-dependent', 'edge-b': 'endpoint-independent' });
      const pairs = crossSitePairs(lab, 'edge-a', 'edge-b');
      const results = await measureTimeToDirect(lab, pairs, { timeoutMs: 2 * DIRECT_WITHIN_MS });
      for (const r of results) all.push({ ...r, lab: n });
      // A direct path here is the UDP one (no TCP hole punch gets through this NAT either).
      for (const r of results) if (r.msToDirect !== null) expect(r.finalPath, `${r.from}→${r.to}`).toBe('udp-punched');
      const edgeA = lab.nodes.filter((x) => x.site === 'edge-a').map((x) => x.name);
      const edgeB = lab.nodes.filter((x) => x.site === 'edge-b').map((x) => x.name);
      for (const node of edgeA) {
        const m = await birthdayMetrics(lab, node);
        console.log(`${node} (hard): ${JSON.stringify(m)}`);
        expect(m['attempts-hard']).toBeGreaterThanOrEqual(1);
        expect(m.hits).toBeGreaterThanOrEqual(1);
        // Bounded: 256 sockets and 2 rounds of probes per attempt, no more.
        expect(m['sockets-opened']).toBeLessThanOrEqual(256 * m['attempts-hard']!);
        expect(m['probes-sent']).toBeLessThanOrEqual(2 * 256 * 2 * m['attempts-hard']!);
        expect(m['attempts-easy'] ?? 0).toBe(0);
      }
      for (const node of edgeB) {
        const m = await birthdayMetrics(lab, node);
        console.log(`${node} (easy): ${JSON.stringify(m)}`);
        expect(m['attempts-easy']).toBeGreaterThanOrEqual(1);
        expect(m['probes-sent']).toBeLessThanOrEqual(2000 * m['attempts-easy']!);
        expect(m['attempts-hard'] ?? 0).toBe(0);
      }
      const marks = { prefix: lab.prefix, dir: lab.dir, id: lab.id };
      await lab.down();
      lab = undefined;
      expectNothingLeft(before, await snapshotHost(), marks);
      const inTime = results.filter((r) => r.msToDirect !== null && r.msToDirect <= DIRECT_WITHIN_MS).length;
      console.log(`cold start ${n}: ${inTime}/${results.length} pairs direct within ${DIRECT_WITHIN_MS / 1000} s`);
    }
    const misses = all.filter((r) => r.msToDirect === null || r.msToDirect > DIRECT_WITHIN_MS);
    const times = all.flatMap((r) => (r.msToDirect === null ? [] : [r.msToDirect])).sort((a, b) => a - b);
    console.log(
      `endpoint-dependent ↔ port-preserving, direct within ${DIRECT_WITHIN_MS / 1000} s: ${all.length - misses.length}/${all.length} pairs ` +
        `(${(((all.length - misses.length) / all.length) * 100).toFixed(0)} %); first packet → direct median ` +
        `${times[Math.floor(times.length / 2)] ?? '-'} ms, slowest ${times.at(-1) ?? '-'} ms`,
    );
    // The issue's bar is 95 % over 20 trials (bench/nat-trials.ts); a CI sample this small must not miss.
    expect(
      misses.map(
        (r) =>
          `lab ${r.lab} ${r.from}→${r.to}: ${r.msToDirect === null ? `never (ended ${r.finalPath})` : `${r.msToDirect} ms`}, ` +
          r.timeline.map((t) => `${t.path}@${t.ms}`).join(' '),
      ),
    ).toEqual([]);
  }, 600_000);
});
