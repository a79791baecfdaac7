// The free-address bookkeeping of one node block, in memory. Round-robin like CNI host-local:
// the search starts after the last address handed out, so a just-released IP is not given to
// the next pod (a stale conntrack entry or ARP cache would send it the old pod's traffic).
import { type Cidr, formatAddress, formatCidr, parseAddress, parseCidr, usableRange } from './cidr.ts';
import type { IpFamily, NodeBlock } from './types.ts';

export class BlockPool {
  readonly block: NodeBlock;
  readonly family: IpFamily;
  private readonly cidr: Cidr;
  private readonly first: bigint;
  private readonly last: bigint;
  private readonly reserved: bigint;
  private readonly used = new Set<bigint>();
  /** The last address handed out (persisted through the journal), or undefined before the first. */
  private lastAllocated: bigint | undefined;

  constructor(block: NodeBlock) {
    this.cidr = parseCidr(block.cidr);
    this.family = this.cidr.family;
    this.block = { family: this.family, cidr: formatCidr(this.cidr), gateway: block.gateway };
    const range = usableRange(this.cidr);
    this.first = range.first;
    this.last = range.last;
    this.reserved = parseAddress(block.gateway).value;
  }

  get cidrText(): string {
    return this.block.cidr;
  }

  get prefixLength(): number {
    return this.cidr.prefix;
  }

  /** Usable addresses minus the gateway. A number: exact up to 2^53 (an IPv6 /75 block). */
  get capacity(): number {
    const usable = this.last - this.first + 1n;
    const gatewayInside = this.reserved >= this.first && this.reserved <= this.last ? 1n : 0n;
    return Number(usable - gatewayInside);
  }

  get inUse(): number {
    return this.used.size;
  }

  /** True when the address belongs to this block's allocatable range (gateway excluded). */
  owns(address: string): boolean {
    let a: { family: IpFamily; value: bigint };
    try {
      a = parseAddress(address);
    } catch {
      return false;
    }
    return a.family === this.family && a.value >= this.first && a.value <= this.last && a.value !== this.reserved;
  }

  /** The next free address after the round-robin pointer, without taking it. */
  findFree(): string | undefined {
    if (this.used.size >= this.capacity) return undefined;
    let candidate = this.lastAllocated === undefined ? this.first : this.lastAllocated + 1n;
    // At most used.size + 2 steps find a free one (used.size < capacity), so the scan is short
    // even for an IPv6 block of 2^48 addresses.
    for (;;) {
      if (candidate > this.last || candidate < this.first) candidate = this.first;
      if (candidate !== this.reserved && !this.used.has(candidate)) return formatAddress(this.family, candidate);
      candidate++;
    }
  }

  /** Marks the address used and moves the round-robin pointer to it. */
  take(address: string): void {
    const v = parseAddress(address).value;
    this.used.add(v);
    this.lastAllocated = v;
  }

  /** Marks the address used without moving the pointer (rebuilding state from a snapshot). */
  markUsed(address: string): void {
    this.used.add(parseAddress(address).value);
  }

  release(address: string): void {
    this.used.delete(parseAddress(address).value);
  }

  isUsed(address: string): boolean {
    return this.used.has(parseAddress(address).value);
  }

  get pointer(): string | undefined {
    return this.lastAllocated === undefined ? undefined : formatAddress(this.family, this.lastAllocated);
  }

  set pointer(address: string | undefined) {
    this.lastAllocated = address === undefined ? undefined : parseAddress(address).value;
  }
}
