// Pod IP leases of this node: one address per configured family per attachment
// (CNI containerId + ifname), persisted crash-safely (see lease-journal.ts).
//
// One writer process (the agent) owns a store directory; a pid lock file refuses a second.
// Inside the process every mutation goes through one bounded queue, applied in order and
// group-committed: a batch is applied in memory, appended with one write + fdatasync, and
// only then are its callers answered. get()/list() read memory and may show a mutation of
// the batch currently being written a few hundred microseconds before it is acknowledged.
import { open, readFile, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type Logger, silentLogger } from '../common/log.ts';
import { BlockPool } from './block-pool.ts';
import { IpamError } from './errors.ts';
import {
  emptySnapshot,
  ensureStoreDir,
  type JournalRecord,
  JournalWriter,
  loadJournal,
  SNAPSHOT_FILE,
  type Snapshot,
} from './lease-journal.ts';
import type { IpFamily, Lease, LeasedIp, NodeBlock } from './types.ts';

export interface LeaseStoreOptions {
  /** Directory of the store (created 0700), e.g. /var/lib/edgemesh/ipam. */
  dir: string;
  /** This node's blocks; at most one per family is typical, extra blocks of a family are used in order. */
  blocks: NodeBlock[];
  logger?: Logger;
  /** Mutations waiting at most (bounded queue); beyond → IpamError "Busy". Default 10,000. */
  maxPending?: number;
  /** Compact when the journal holds more than max(this, 2 × leases) records. Default 1,000. */
  compactAfter?: number;
}

export interface BlockUsage {
  family: IpFamily;
  cidr: string;
  used: number;
  capacity: number;
}

interface Mutation {
  /** Applies to memory; returns the records to persist and the caller's result. Throws without side effects. */
  apply: () => { records: Omit<JournalRecord, 'seq'>[]; result: unknown };
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

const MAX_BATCH = 512;
const LOCK_FILE = 'lock';
/** Store directories open in this process (the pid lock cannot tell two of ours apart). */
const openDirs = new Set<string>();

function key(containerId: string, ifname: string): string {
  return `${containerId}\u0000${ifname}`;
}

function checkAttachment(containerId: string, ifname: string): void {
  if (typeof containerId !== 'string' || containerId.length === 0 || containerId.length > 1024) {
    throw new IpamError('InvalidArgument', 'containerId must be a non-empty string of at most 1024 characters');
  }
  if (typeof ifname !== 'string' || ifname.length === 0 || ifname.length > 64) {
    throw new IpamError('InvalidArgument', 'ifname must be a non-empty string of at most 64 characters');
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the store's pid lock; a lock left by a dead process (SIGKILL) is taken over. */
async function takeLock(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    const ours = holder === process.pid && openDirs.has(resolve(dir));
    if (ours || (Number.isInteger(holder) && holder > 0 && holder !== process.pid && pidAlive(holder))) {
      throw new IpamError('StoreLocked', `lease store ${dir} is in use by process ${holder}`);
    }
    await unlink(path).catch(() => {});
  }
  throw new IpamError('StoreLocked', `could not take the lock of lease store ${dir}`);
}

export class LeaseStore {
  private readonly dir: string;
  private readonly log: Logger;
  private readonly maxPending: number;
  private readonly compactAfter: number;
  private pools: BlockPool[] = [];
  private families: IpFamily[] = [];
  private leases = new Map<string, Lease>();
  private writer: JournalWriter | undefined;
  private seq = 0;
  private pending: Mutation[] = [];
  private draining = false;
  private idle: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly blocks: NodeBlock[];
  private orphanLeases: Lease[] = [];

  private constructor(opts: LeaseStoreOptions) {
    this.dir = opts.dir;
    this.blocks = opts.blocks;
    this.log = opts.logger ?? silentLogger();
    this.maxPending = opts.maxPending ?? 10_000;
    this.compactAfter = opts.compactAfter ?? 1_000;
  }

  static async open(opts: LeaseStoreOptions): Promise<LeaseStore> {
    if (opts.blocks.length === 0) throw new IpamError('NoBlocks', 'a lease store needs at least one node block');
    const store = new LeaseStore(opts);
    await ensureStoreDir(opts.dir);
    await takeLock(opts.dir);
    openDirs.add(resolve(opts.dir));
    try {
      await store.load();
    } catch (e) {
      openDirs.delete(resolve(opts.dir));
      await unlink(join(opts.dir, LOCK_FILE)).catch(() => {});
      throw e;
    }
    return store;
  }

  /** (Re)builds memory from disk: snapshot, then journal replay. */
  private async load(): Promise<void> {
    const loaded = await loadJournal(this.dir);
    if (loaded.truncatedBytes > 0) {
      this.log.warn({ bytes: loaded.truncatedBytes }, 'cut a torn, unacknowledged tail off the lease journal');
    }
    this.pools = this.blocks.map((b) => new BlockPool(b));
    this.families = [...new Set(this.pools.map((p) => p.family))].sort();
    this.leases = new Map();
    for (const lease of loaded.snapshot.leases) this.leases.set(key(lease.containerId, lease.ifname), lease);
    const pointers = new Map(Object.entries(loaded.snapshot.lastAllocated));
    this.seq = loaded.snapshot.seq;
    for (const r of loaded.records) {
      if (r.op === 'allocate') {
        this.leases.set(key(r.lease.containerId, r.lease.ifname), r.lease);
        for (const ip of r.lease.ips) {
          const pool = this.poolOwning(ip.address);
          if (pool) pointers.set(pool.cidrText, ip.address);
        }
      } else {
        this.leases.delete(key(r.containerId, r.ifname));
      }
      this.seq = r.seq;
    }
    for (const pool of this.pools) {
      const p = pointers.get(pool.cidrText);
      if (p !== undefined && pool.owns(p)) pool.pointer = p;
    }
    this.orphanLeases = [];
    for (const lease of this.leases.values()) {
      let orphan = false;
      for (const ip of lease.ips) {
        const pool = this.poolOwning(ip.address);
        if (!pool) orphan = true;
        else if (pool.isUsed(ip.address)) {
          // Never expected: two leases with one address. Keep both visible, shout.
          this.log.error({ address: ip.address }, 'lease store holds the same address twice');
        } else pool.markUsed(ip.address);
      }
      if (orphan) this.orphanLeases.push(lease);
    }
    if (this.orphanLeases.length > 0) {
      this.log.warn(
        { count: this.orphanLeases.length, blocks: this.blocks.map((b) => b.cidr) },
        'leases outside this node’s blocks (node block changed?): release them or GC',
      );
    }
    await this.writer?.close().catch(() => {});
    this.writer = await JournalWriter.open(this.dir, loaded.records.length);
  }

  private poolOwning(address: string): BlockPool | undefined {
    return this.pools.find((p) => p.owns(address));
  }

  /** Leases found on open whose addresses lie outside the current blocks. */
  orphans(): Lease[] {
    return [...this.orphanLeases];
  }

  get(containerId: string, ifname: string): Lease | undefined {
    return this.leases.get(key(containerId, ifname));
  }

  list(): Lease[] {
    return [...this.leases.values()];
  }

  usage(): BlockUsage[] {
    return this.pools.map((p) => ({ family: p.family, cidr: p.cidrText, used: p.inUse, capacity: p.capacity }));
  }

  /**
   * One address per family for the attachment; the same lease again if it already has one.
   * Resolves once the lease is durable; `onChosen` hears the lease as soon as it is picked,
   * while its record is still being written (the CNI plugin plumbs the pod meanwhile and
   * answers only when both are done).
   */
  async allocate(
    containerId: string,
    ifname: string,
    opts: { onChosen?: (lease: Lease) => void } = {},
  ): Promise<Lease> {
    checkAttachment(containerId, ifname);
    return this.enqueue<Lease>(() => {
      const existing = this.leases.get(key(containerId, ifname));
      if (existing) {
        opts.onChosen?.(existing);
        return { records: [], result: existing };
      }
      // Choose every family's address first, take them only if all exist: all-or-nothing.
      const picks: Array<{ pool: BlockPool; address: string }> = [];
      for (const family of this.families) {
        const pools = this.pools.filter((p) => p.family === family);
        let pick: { pool: BlockPool; address: string } | undefined;
        for (const pool of pools) {
          const address = pool.findFree();
          if (address !== undefined) {
            pick = { pool, address };
            break;
          }
        }
        if (!pick) {
          const desc = pools.map((p) => `${p.cidrText} (${p.inUse} in use)`).join(', ');
          throw new IpamError('Exhausted', `no free address in ${desc}`);
        }
        picks.push(pick);
      }
      const ips: LeasedIp[] = picks.map(({ pool, address }) => {
        pool.take(address);
        return { family: pool.family, address, prefixLength: pool.prefixLength, gateway: pool.block.gateway };
      });
      const lease: Lease = { containerId, ifname, ips };
      this.leases.set(key(containerId, ifname), lease);
      opts.onChosen?.(lease);
      return { records: [{ op: 'allocate', lease }], result: lease };
    });
  }

  /** Frees the attachment's addresses; undefined when it had none (idempotent). */
  async release(containerId: string, ifname: string): Promise<Lease | undefined> {
    checkAttachment(containerId, ifname);
    return this.enqueue<Lease | undefined>(() => {
      const lease = this.releaseInMemory(containerId, ifname);
      return { records: lease ? [{ op: 'release', containerId, ifname }] : [], result: lease };
    });
  }

  /** Releases every lease whose attachment is not in `valid`; returns the released leases. */
  async gc(valid: Array<{ containerId: string; ifname: string }>): Promise<Lease[]> {
    const keep = new Set(valid.map((a) => key(a.containerId, a.ifname)));
    return this.enqueue<Lease[]>(() => {
      const released: Lease[] = [];
      for (const [k, lease] of [...this.leases]) {
        if (keep.has(k)) continue;
        this.releaseInMemory(lease.containerId, lease.ifname);
        released.push(lease);
      }
      return {
        records: released.map((l) => ({ op: 'release' as const, containerId: l.containerId, ifname: l.ifname })),
        result: released,
      };
    });
  }

  private releaseInMemory(containerId: string, ifname: string): Lease | undefined {
    const k = key(containerId, ifname);
    const lease = this.leases.get(k);
    if (!lease) return undefined;
    this.leases.delete(k);
    for (const ip of lease.ips) this.poolOwning(ip.address)?.release(ip.address);
    this.orphanLeases = this.orphanLeases.filter((l) => l !== lease);
    return lease;
  }

  private enqueue<T>(apply: Mutation['apply']): Promise<T> {
    if (this.closed) return Promise.reject(new IpamError('StoreClosed', 'lease store is closed'));
    if (this.pending.length >= this.maxPending) {
      return Promise.reject(new IpamError('Busy', `lease store busy: ${this.pending.length} mutations waiting`));
    }
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    this.pending.push({ apply, resolve: resolve as (v: unknown) => void, reject });
    if (!this.draining) {
      this.draining = true;
      this.idle = this.drain();
    }
    return promise;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, MAX_BATCH);
        const records: JournalRecord[] = [];
        const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
        for (const m of batch) {
          try {
            const { records: recs, result } = m.apply();
            for (const r of recs) records.push({ ...r, seq: ++this.seq } as JournalRecord);
            outcomes.push({ ok: true, value: result });
          } catch (error) {
            outcomes.push({ ok: false, error });
          }
        }
        try {
          await this.writer?.append(records);
        } catch (error) {
          // Memory is ahead of the disk now: answer the whole batch with the error and rebuild
          // memory from what is durable, so nothing unacknowledged is ever handed out as used.
          const failure = new IpamError('StoreWriteFailed', `could not persist leases in ${this.dir}`, {
            cause: error,
          });
          for (const m of batch) m.reject(failure);
          this.log.error({ err: error }, 'lease journal write failed; reloading from disk');
          await this.load().catch((e) => this.log.error({ err: e }, 'reloading the lease store failed'));
          continue;
        }
        batch.forEach((m, i) => {
          const o = outcomes[i] as (typeof outcomes)[number];
          if (o.ok) m.resolve(o.value);
          else m.reject(o.error);
        });
        await this.maybeCompact();
      }
    } finally {
      this.draining = false;
    }
  }

  private snapshot(): Snapshot {
    const s = emptySnapshot();
    s.seq = this.seq;
    s.leases = this.list();
    for (const p of this.pools) {
      const ptr = p.pointer;
      if (ptr !== undefined) s.lastAllocated[p.cidrText] = ptr;
    }
    return s;
  }

  private async maybeCompact(): Promise<void> {
    const writer = this.writer;
    if (!writer || writer.records <= Math.max(this.compactAfter, 2 * this.leases.size)) return;
    try {
      await writer.compact(this.snapshot());
      this.log.debug({ leases: this.leases.size, file: SNAPSHOT_FILE }, 'compacted lease journal');
    } catch (error) {
      // Snapshot + journal on disk are still a complete record; reopen to get a usable writer.
      this.log.error({ err: error }, 'lease journal compaction failed; reloading');
      await this.load().catch((e) => this.log.error({ err: e }, 'reloading the lease store failed'));
    }
  }

  /** Waits for queued mutations, then releases the file handle and the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.idle;
    await this.writer?.close();
    this.writer = undefined;
    openDirs.delete(resolve(this.dir));
    await unlink(join(this.dir, LOCK_FILE)).catch(() => {});
  }
}
