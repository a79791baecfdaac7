// SIGKILL at random instants while a child allocates and releases leases; after every kill
// the store must open, hold every acknowledged lease exactly as acknowledged, hold no
// acknowledged-released one, and never hold one address twice.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway } from '../../../ipam/cidr.ts';
import { LeaseStore } from '../../../ipam/lease-store.ts';
import type { Lease, NodeBlock } from '../../../ipam/types.ts';

const CHILD = join(import.meta.dirname, '../../support/lease-child.ts');
const BLOCKS: NodeBlock[] = ['10.250.0.0/18', 'fd00:10:250::/80'].map((cidr) => ({
  family: cidr.includes(':') ? 6 : 4,
  cidr,
  gateway: gateway(cidr),
}));
const ROUNDS = 20;
const PER_ROUND = 200;

let dir: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-ipam-crash-'));
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

function releasedByChild(containerId: string): boolean {
  return Number(containerId.split('-').at(-1)) % 4 === 3;
}

interface RoundResult {
  acked: Lease[];
  released: string[];
  killed: boolean;
}

/**
 * Runs the child for one round and SIGKILLs it once it has acknowledged `killAtAck` leases
 * (0 = right after READY), after a further random 0–2 ms so the signal lands at arbitrary
 * instants of the next writes, fsyncs and compactions.
 */
function runRound(round: number, killAtAck: number): Promise<RoundResult> {
  const child = spawn(process.execPath, [CHILD, dir, `r${round}`, String(PER_ROUND), JSON.stringify(BLOCKS)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const result: RoundResult = { acked: [], released: [], killed: false };
  let buffered = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl = buffered.indexOf('\n');
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.startsWith('ALLOC ')) result.acked.push(JSON.parse(line.slice(6)) as Lease);
      if ((line === 'READY' && killAtAck === 0) || (line.startsWith('ALLOC ') && result.acked.length === killAtAck)) {
        setTimeout(() => child.kill('SIGKILL'), Math.random() * 2);
      } else if (line.startsWith('RELEASE ')) result.released.push(line.split(' ')[1] as string);
      nl = buffered.indexOf('\n');
    }
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (signal === 'SIGKILL' || code === 0) resolve({ ...result, killed: signal === 'SIGKILL' });
      else reject(new Error(`lease child exited ${code}: ${stderr}`));
    });
  });
}

describe('LeaseStore under SIGKILL', () => {
  it(`keeps every acknowledged lease over ${ROUNDS} random kills`, async () => {
    const expected = new Map<string, Lease>(); // containerId → lease acknowledged and not released
    const released = new Set<string>();
    let kills = 0;
    let totalAcked = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // Kill points from "before the first ack" to "near the end"; a few rounds complete.
      const result = await runRound(round, Math.floor(Math.random() * PER_ROUND));
      if (result.killed) kills++;
      totalAcked += result.acked.length;
      for (const lease of result.acked) expected.set(lease.containerId, lease);
      for (const id of result.released) {
        expected.delete(id);
        released.add(id);
      }

      const store = await LeaseStore.open({ dir, blocks: BLOCKS });
      try {
        for (const [id, lease] of expected) {
          const found = store.get(id, 'eth0');
          // The child releases every 4th lease right after its allocation was acknowledged;
          // a kill between that release's fdatasync and its print makes a lease vanish
          // without a RELEASE line — a durable but unacknowledged mutation, which is allowed.
          if (found === undefined && releasedByChild(id)) continue;
          expect(found, `round ${round}: ${id}`).toEqual(lease);
        }
        for (const id of released) expect(store.get(id, 'eth0'), `round ${round}: released ${id}`).toBeUndefined();
        const addresses = store.list().flatMap((l) => l.ips.map((ip) => ip.address));
        expect(new Set(addresses).size, `round ${round}: duplicate address`).toBe(addresses.length);
        const used = store.usage().map((u) => u.used);
        expect(used).toEqual([store.list().length, store.list().length]);
      } finally {
        await store.close();
      }
    }
    // The test must actually have killed children mid-work and seen acknowledgements.
    expect(kills).toBeGreaterThanOrEqual(ROUNDS * 0.75);
    expect(totalAcked).toBeGreaterThan(ROUNDS * 10);
    console.log(
      `crash test: ${kills}/${ROUNDS} rounds killed, ${totalAcked} leases acknowledged, ${released.size} released`,
    );
  });
});
