// lab up --dual-stack: every pod gets an IPv4 and an IPv6 address from the CNI client, and
// pods on different sites reach each other by either (the tunnels carry IPv6 over an
// IPv4-only internet).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, labUp } from '../../lab/lab.ts';
import { formatMatrix, runMatrix } from '../../lab/matrix.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

describe('lab up --dual-stack', () => {
  let before: HostSnapshot;
  let lab: Lab | undefined;

  beforeAll(async () => {
    before = await snapshotHost();
    lab = await labUp({
      overrides: { nodesPerSite: 1, podsPerNode: 1, dualStack: true },
      progress: (l) => console.log(l),
    });
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('gives every pod one address per family, inside the cluster CIDRs', () => {
    for (const p of lab!.pods) {
      expect(p.ips, p.name).toHaveLength(2);
      expect(p.ips[0]).toMatch(/^10\.244\./);
      expect(p.ips[1]).toMatch(/^fd00:10:244:/);
    }
  });

  it('reaches every pod on another site by its IPv4 and its IPv6 Pod IP', async () => {
    const result = await runMatrix(lab!);
    console.log(formatMatrix(result));
    expect(result.entries).toHaveLength(2 * 6);
    expect(result.entries.filter((e) => e.target.includes(':'))).toHaveLength(6);
    expect(result.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.target}`)).toEqual([]);
  });

  it('takes everything down', async () => {
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    await lab!.down();
    lab = undefined;
    expectNothingLeft(before, await snapshotHost(), marks);
  });
});
