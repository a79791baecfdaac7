import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { contains, gateway } from '../../../ipam/cidr.ts';
import { IpamError } from '../../../ipam/errors.ts';
import { JOURNAL_FILE, repairJournal, SNAPSHOT_FILE } from '../../../ipam/lease-journal.ts';
import { LeaseStore } from '../../../ipam/lease-store.ts';
import type { NodeBlock } from '../../../ipam/types.ts';

function block(cidr: string): NodeBlock {
  return { family: cidr.includes(':') ? 6 : 4, cidr, gateway: gateway(cidr) };
}

const V4 = block('10.244.3.0/24');
const V6 = block('fd00:10:244:0:3::/80');

let dir: string;
const open: LeaseStore[] = [];
async function openStore(blocks: NodeBlock[], extra: { compactAfter?: number; maxPending?: number } = {}) {
  const s = await LeaseStore.open({ dir, blocks, ...extra });
  open.push(s);
  return s;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-ipam-unit-'));
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  await rm(dir, { recursive: true, force: true });
});

describe('LeaseStore allocation', () => {
  it('hands out the first address after the gateway, with prefix and gateway', async () => {
    const s = await openStore([V4]);
    const lease = await s.allocate('c1', 'eth0');
    expect(lease).toEqual({
      containerId: 'c1',
      ifname: 'eth0',
      ips: [{ family: 4, address: '10.244.3.2', prefixLength: 24, gateway: '10.244.3.1' }],
    });
  });

  it('is idempotent per attachment and distinct per ifname', async () => {
    const s = await openStore([V4]);
    const a = await s.allocate('c1', 'eth0');
    expect(await s.allocate('c1', 'eth0')).toEqual(a);
    const b = await s.allocate('c1', 'net1');
    expect(b.ips[0]?.address).not.toBe(a.ips[0]?.address);
    expect(s.get('c1', 'eth0')).toEqual(a);
    expect(s.list()).toHaveLength(2);
    expect(await s.release('c1', 'eth0')).toEqual(a);
    expect(await s.release('c1', 'eth0')).toBeUndefined();
    expect(s.get('c1', 'eth0')).toBeUndefined();
  });

  it('tells onChosen the lease before it is durable, also for a repeated allocation', async () => {
    const s = await openStore([V4]);
    const heard: string[] = [];
    let durableFirst = false;
    const first = s.allocate('c1', 'eth0', { onChosen: (l) => heard.push(l.ips[0]!.address) });
    void first.then(() => {
      durableFirst = heard.length === 0;
    });
    const lease = await first;
    expect(heard).toEqual([lease.ips[0]!.address]);
    expect(durableFirst).toBe(false);
    // The chosen lease is the one that reopens from disk.
    await s.allocate('c1', 'eth0', { onChosen: (l) => heard.push(l.ips[0]!.address) });
    expect(heard).toEqual([lease.ips[0]!.address, lease.ips[0]!.address]);
    await s.close();
    open.splice(open.indexOf(s), 1);
    const again = await openStore([V4]);
    expect(again.get('c1', 'eth0')).toEqual(lease);
  });

  it('is round-robin: a released address is not handed out again at once', async () => {
    const s = await openStore([V4]);
    const a = await s.allocate('a', 'eth0');
    await s.release('a', 'eth0');
    const b = await s.allocate('b', 'eth0');
    expect(b.ips[0]?.address).toBe('10.244.3.3');
    expect(a.ips[0]?.address).toBe('10.244.3.2');
  });

  it('keeps the round-robin pointer across reopen', async () => {
    let s = await openStore([V4]);
    await s.allocate('a', 'eth0');
    await s.release('a', 'eth0');
    await s.close();
    open.length = 0;
    s = await openStore([V4]);
    expect((await s.allocate('b', 'eth0')).ips[0]?.address).toBe('10.244.3.3');
  });

  it('wraps around and exhausts a block with a clear error, reserving network/gateway/broadcast', async () => {
    const small = block('10.9.0.0/29'); // .0 network, .1 gateway, .7 broadcast → .2–.6 usable
    const s = await openStore([small]);
    const got: string[] = [];
    for (let i = 0; i < 5; i++) got.push((await s.allocate(`c${i}`, 'eth0')).ips[0]?.address as string);
    expect(got.sort()).toEqual(['10.9.0.2', '10.9.0.3', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
    const err = await s.allocate('c5', 'eth0').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpamError);
    expect((err as IpamError).message).toBe('no free address in 10.9.0.0/29 (5 in use)');
    expect(s.usage()).toEqual([{ family: 4, cidr: '10.9.0.0/29', used: 5, capacity: 5 }]);
    await s.release('c2', 'eth0');
    expect((await s.allocate('c6', 'eth0')).ips[0]?.address).toBe('10.9.0.4');
  });

  it('gives one v4 and one v6 address per attachment (dual-stack)', async () => {
    const s = await openStore([V4, V6]);
    const lease = await s.allocate('c1', 'eth0');
    expect(lease.ips).toEqual([
      { family: 4, address: '10.244.3.2', prefixLength: 24, gateway: '10.244.3.1' },
      { family: 6, address: 'fd00:10:244:0:3::2', prefixLength: 80, gateway: 'fd00:10:244:0:3::1' },
    ]);
    expect(s.usage().map((u) => u.used)).toEqual([1, 1]);
    expect(s.usage()[1]?.capacity).toBe(2 ** 48 - 2);
  });

  it('is all-or-nothing when one family is exhausted', async () => {
    const s = await openStore([block('10.9.0.0/30'), V6]); // v4: only .2 is allocatable
    await s.allocate('c1', 'eth0');
    await expect(s.allocate('c2', 'eth0')).rejects.toThrow('no free address in 10.9.0.0/30 (1 in use)');
    expect(s.usage()).toEqual([
      { family: 4, cidr: '10.9.0.0/30', used: 1, capacity: 1 },
      { family: 6, cidr: 'fd00:10:244:0:3::/80', used: 1, capacity: 2 ** 48 - 2 },
    ]);
    expect(s.get('c2', 'eth0')).toBeUndefined();
  });

  it('GC releases everything not in the live list', async () => {
    const s = await openStore([V4]);
    for (const id of ['a', 'b', 'c', 'd']) await s.allocate(id, 'eth0');
    const released = await s.gc([
      { containerId: 'b', ifname: 'eth0' },
      { containerId: 'd', ifname: 'eth0' },
      { containerId: 'zzz', ifname: 'eth0' },
    ]);
    expect(released.map((l) => l.containerId).sort()).toEqual(['a', 'c']);
    expect(
      s
        .list()
        .map((l) => l.containerId)
        .sort(),
    ).toEqual(['b', 'd']);
    await s.close();
    open.length = 0;
    const again = await openStore([V4]);
    expect(
      again
        .list()
        .map((l) => l.containerId)
        .sort(),
    ).toEqual(['b', 'd']);
  });

  it('rejects bad arguments clearly and refuses a second opener of the same directory', async () => {
    const s = await openStore([V4]);
    await expect(s.allocate('', 'eth0')).rejects.toThrow(/containerId/);
    await expect(s.allocate('c', '')).rejects.toThrow(/ifname/);
    await expect(s.release('c', 'x'.repeat(65))).rejects.toThrow(/ifname/);
    await expect(LeaseStore.open({ dir, blocks: [V4] })).rejects.toThrow(/in use/);
    await expect(LeaseStore.open({ dir, blocks: [] })).rejects.toThrow(/at least one node block/);
  });

  it('reports leases outside the blocks after the node block changed', async () => {
    let s = await openStore([V4]);
    await s.allocate('old', 'eth0');
    await s.close();
    open.length = 0;
    s = await openStore([block('10.244.9.0/24')]);
    expect(s.orphans().map((l) => l.containerId)).toEqual(['old']);
    expect((await s.allocate('new', 'eth0')).ips[0]?.address).toBe('10.244.9.2');
    await s.release('old', 'eth0');
    expect(s.orphans()).toEqual([]);
  });
});

describe('LeaseStore concurrency and persistence', () => {
  it('1000 concurrent allocations on one node: 1000 distinct addresses, all present after reopen', async () => {
    const big = block('10.250.0.0/20');
    let s = await openStore([big, V6], { compactAfter: 300 });
    const leases = await Promise.all(Array.from({ length: 1000 }, (_, i) => s.allocate(`pod-${i}`, 'eth0')));
    const v4 = new Set(leases.map((l) => l.ips[0]?.address));
    const v6 = new Set(leases.map((l) => l.ips[1]?.address));
    expect(v4.size).toBe(1000);
    expect(v6.size).toBe(1000);
    for (const a of v4) expect(contains(big.cidr, a as string)).toBe(true);
    await s.close();
    open.length = 0;
    s = await openStore([big, V6]);
    expect(s.list()).toHaveLength(1000);
    for (const l of leases) expect(s.get(l.containerId, l.ifname)).toEqual(l);
    expect(s.usage().map((u) => u.used)).toEqual([1000, 1000]);
  });

  it('bounds the mutation queue', async () => {
    const s = await openStore([block('10.250.0.0/20')], { maxPending: 10 });
    const results = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => s.allocate(`p${i}`, 'eth0')));
    const busy = results.filter((r) => r.status === 'rejected');
    expect(busy.length).toBeGreaterThan(0);
    expect(String((busy[0] as PromiseRejectedResult).reason)).toMatch(/busy/);
    const ok = results.filter((r) => r.status === 'fulfilled');
    expect(s.list()).toHaveLength(ok.length);
  });

  it('compacts the journal into a snapshot and replays correctly', async () => {
    let s = await openStore([V4], { compactAfter: 20 });
    for (let i = 0; i < 60; i++) {
      await s.allocate(`p${i}`, 'eth0');
      if (i % 2 === 0) await s.release(`p${i}`, 'eth0');
    }
    const before = s.list();
    await s.close();
    open.length = 0;
    const snap = JSON.parse(await readFile(join(dir, SNAPSHOT_FILE), 'utf8'));
    expect(snap.seq).toBeGreaterThan(0);
    const journalLines = (await readFile(join(dir, JOURNAL_FILE), 'utf8')).split('\n').filter(Boolean);
    expect(journalLines.length).toBeLessThan(60);
    s = await openStore([V4]);
    expect(s.list().sort((a, b) => a.containerId.localeCompare(b.containerId))).toEqual(
      before.sort((a, b) => a.containerId.localeCompare(b.containerId)),
    );
  });

  it('cuts a torn tail but keeps every complete record', async () => {
    let s = await openStore([V4]);
    await s.allocate('a', 'eth0');
    await s.allocate('b', 'eth0');
    await s.close();
    open.length = 0;
    const path = join(dir, JOURNAL_FILE);
    const text = await readFile(path, 'utf8');
    await writeFile(path, `${text}0badc0de {"seq":3,"op":"allo`);
    s = await openStore([V4]);
    expect(s.list().map((l) => l.containerId)).toEqual(['a', 'b']);
    expect((await s.allocate('c', 'eth0')).ips[0]?.address).toBe('10.244.3.4');
    await s.close();
    open.length = 0;
    s = await openStore([V4]);
    expect(s.list().map((l) => l.containerId)).toEqual(['a', 'b', 'c']);
  });

  it('creates a nested store directory with mode 0700', async () => {
    const nested = join(dir, 'var/lib/edgemesh/ipam');
    const s = await LeaseStore.open({ dir: nested, blocks: [V4] });
    try {
      await s.allocate('a', 'eth0');
      expect((await stat(nested)).mode & 0o777).toBe(0o700);
    } finally {
      await s.close();
    }
  });

  it('refuses a corrupt snapshot instead of guessing', async () => {
    await writeFile(join(dir, SNAPSHOT_FILE), '{"format":');
    await expect(LeaseStore.open({ dir, blocks: [V4] })).rejects.toThrow(/does not parse/);
  });
});

describe('LeaseStore durability: short writes and corruption', () => {
  /** Makes the store's next journal write(2) take only the first half of its bytes (a nearly full disk). */
  function shortWriteOnce(store: LeaseStore, then?: NodeJS.ErrnoException) {
    const fh = (store as unknown as { writer: { fh: { write: (...a: unknown[]) => Promise<unknown> } } }).writer.fh;
    const real = fh.write.bind(fh);
    fh.write = async (data: unknown, offset?: unknown, length?: unknown) => {
      fh.write = real;
      const all =
        typeof data === 'string'
          ? Buffer.from(data)
          : (data as Buffer).subarray(offset as number, (offset as number) + (length as number));
      const half = all.subarray(0, Math.floor(all.length / 2));
      await real(half, 0, half.length);
      if (then) throw then;
      return { bytesWritten: half.length, buffer: data };
    };
  }

  it('completes a short write before acknowledging: no torn line ahead of later records', async () => {
    let s = await openStore([V4]);
    await s.allocate('a', 'eth0');
    shortWriteOnce(s);
    await s.allocate('b', 'eth0');
    await s.allocate('c', 'eth0');
    await s.close();
    open.length = 0;
    s = await openStore([V4]);
    // Before: b's record was half written yet acknowledged, c's followed it, and opening cut
    // both off: two pods' addresses free to hand out again.
    expect(s.list().map((l) => l.containerId)).toEqual(['a', 'b', 'c']);
  });

  it('fails the request on ENOSPC mid-write and cuts the partial record off', async () => {
    let s = await openStore([V4]);
    await s.allocate('a', 'eth0');
    shortWriteOnce(s, Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }));
    await expect(s.allocate('b', 'eth0')).rejects.toThrow(/could not persist leases/);
    await s.allocate('c', 'eth0');
    const lines = (await readFile(join(dir, JOURNAL_FILE), 'utf8')).split('\n').filter(Boolean);
    expect(lines.every((l) => /^[0-9a-f]{8} \{/.test(l) && l.endsWith('}'))).toBe(true);
    await s.close();
    open.length = 0;
    s = await openStore([V4]);
    expect(s.list().map((l) => l.containerId)).toEqual(['a', 'c']);
  });

  it('refuses to start on a damaged line followed by valid records, and the repair keeps the valid ones', async () => {
    let s = await openStore([V4]);
    for (const id of ['a', 'b', 'c']) await s.allocate(id, 'eth0');
    await s.close();
    open.length = 0;
    const path = join(dir, JOURNAL_FILE);
    const lines = (await readFile(path, 'utf8')).split('\n').filter(Boolean);
    lines[1] = lines[1]!.replace('"b"', '"X"'); // CRC no longer matches: bit rot, not a crash
    await writeFile(path, `${lines.join('\n')}\n`);
    // Before: the damaged line and the acknowledged record after it were silently cut off.
    await expect(LeaseStore.open({ dir, blocks: [V4] })).rejects.toThrow(
      new RegExp(`line 2 is damaged but valid records follow.*edgemesh-cni ipam-repair --lease-dir ${dir}`),
    );
    const repaired = await repairJournal(dir);
    expect(repaired.kept).toBe(2);
    expect(repaired.dropped).toEqual([lines[1]]);
    expect(await readFile(repaired.backup, 'utf8')).toBe(`${lines.join('\n')}\n`);
    s = await openStore([V4]);
    expect(s.list().map((l) => l.containerId)).toEqual(['a', 'c']);
  });
});
