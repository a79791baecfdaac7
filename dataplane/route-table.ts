// Longest-prefix-match route table over IPv4 and IPv6 CIDRs. A binary trie kept in typed
// arrays (one slot per node: two child indexes and a value slot), so a lookup is a short
// walk over integers without allocating: the forwarder does one per packet. Updates take
// effect at once (JS is single-threaded: a lookup never sees half an update).
import { CidrError, parseCidr, parseIp } from '../common/cidr.ts';

/** Address text or bytes → bytes (4 or 16); throws CidrError for anything else. */
function addressBytes(address: string | Uint8Array): Uint8Array {
  if (typeof address === 'string') return parseIp(address);
  if (address.length !== 4 && address.length !== 16) throw new CidrError(String(address), 'need 4 or 16 bytes');
  return address;
}

/**
 * One binary trie over addresses of `bits` bits (32 or 128). Node 0 is the root; node n's
 * children sit at children[2n] (bit 0) and children[2n+1] (bit 1), 0 meaning none (the root
 * is nobody's child), so a lookup step is one array load with no branch on the bit.
 */
class BitTrie {
  readonly bits: number;
  children: Int32Array;
  /** Index+1 into the owning table's value array; 0 = no route ends at this node. */
  slot: Int32Array;
  private nodeCount = 1;
  private readonly freeNodes: number[] = [];

  constructor(bits: number) {
    this.bits = bits;
    this.children = new Int32Array(128);
    this.slot = new Int32Array(64);
  }

  /** Walks (creating nodes) to the node for bytes/prefix; returns its index. */
  nodeFor(bytes: Uint8Array, prefixLength: number): number {
    let node = 0;
    for (let i = 0; i < prefixLength; i++) {
      const bit = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
      let next = this.children[2 * node + bit]!;
      if (next === 0) {
        next = this.allocate();
        this.children[2 * node + bit] = next; // read the field again: allocate() may grow it
      }
      node = next;
    }
    return node;
  }

  /** The node for bytes/prefix and the path to it (root first), or undefined when absent. */
  find(bytes: Uint8Array, prefixLength: number): number[] | undefined {
    const path = [0];
    let node = 0;
    for (let i = 0; i < prefixLength; i++) {
      const bit = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
      node = this.children[2 * node + bit]!;
      if (node === 0) return undefined;
      path.push(node);
    }
    return path;
  }

  /** Every slot on the path to bytes/prefix (routes containing it, itself included) and below it (routes inside it). */
  overlappingSlots(bytes: Uint8Array, prefixLength: number): number[] {
    const found: number[] = [];
    let node = 0;
    if (this.slot[0] !== 0) found.push(this.slot[0]!);
    for (let i = 0; i < prefixLength; i++) {
      const bit = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
      node = this.children[2 * node + bit]!;
      if (node === 0) return found;
      if (this.slot[node] !== 0) found.push(this.slot[node]!);
    }
    // The subtree below: every route more specific than the prefix.
    const stack = [this.children[2 * node]!, this.children[2 * node + 1]!];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (n === 0) continue;
      if (this.slot[n] !== 0) found.push(this.slot[n]!);
      stack.push(this.children[2 * n]!, this.children[2 * n + 1]!);
    }
    return found;
  }

  /** Frees the nodes at the end of `path` that no longer carry a route or a child. */
  prune(path: number[]): void {
    for (let i = path.length - 1; i > 0; i--) {
      const node = path[i]!;
      if (this.slot[node] !== 0 || this.children[2 * node] !== 0 || this.children[2 * node + 1] !== 0) return;
      const parent = path[i - 1]!;
      if (this.children[2 * parent] === node) this.children[2 * parent] = 0;
      else this.children[2 * parent + 1] = 0;
      this.freeNodes.push(node);
    }
  }

  private allocate(): number {
    const reused = this.freeNodes.pop();
    if (reused !== undefined) return reused;
    if (this.nodeCount === this.slot.length) {
      const grow = (a: Int32Array) => {
        const b = new Int32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.children = grow(this.children);
      this.slot = grow(this.slot);
    }
    return this.nodeCount++;
  }
}

export class RouteTable<T> {
  private readonly v4 = new BitTrie(32);
  private readonly v6 = new BitTrie(128);
  private readonly values: (T | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  private readonly routes = new Map<string, T>();

  /** Number of routes. */
  get size(): number {
    return this.routes.size;
  }

  /** Adds or replaces the route for `cidr` (host bits are cleared: "10.1.2.3/16" = "10.1.0.0/16"). */
  insert(cidr: string, value: T): void {
    const p = parseCidr(cidr);
    const trie = p.version === 4 ? this.v4 : this.v6;
    const node = trie.nodeFor(p.bytes, p.prefixLength);
    const existing = trie.slot[node]!;
    if (existing !== 0) {
      this.values[existing - 1] = value;
    } else {
      const slot = this.freeSlots.pop() ?? this.values.length;
      this.values[slot] = value;
      trie.slot[node] = slot + 1;
    }
    this.routes.set(p.text, value);
  }

  /** The value of exactly `cidr` (not a longest-prefix match), or undefined. */
  get(cidr: string): T | undefined {
    return this.routes.get(parseCidr(cidr).text);
  }

  /** Removes the route for exactly `cidr`; returns whether there was one. */
  remove(cidr: string): boolean {
    const p = parseCidr(cidr);
    const trie = p.version === 4 ? this.v4 : this.v6;
    const path = trie.find(p.bytes, p.prefixLength);
    if (!path) return false;
    const node = path[path.length - 1]!;
    const slot = trie.slot[node]!;
    if (slot === 0) return false;
    trie.slot[node] = 0;
    this.values[slot - 1] = undefined;
    this.freeSlots.push(slot - 1);
    this.routes.delete(p.text);
    trie.prune(path);
    return true;
  }

  /** The values of every route that shares an address with `cidr`: routes containing it, equal to it or inside it. */
  overlapping(cidr: string): T[] {
    const p = parseCidr(cidr);
    const trie = p.version === 4 ? this.v4 : this.v6;
    return trie.overlappingSlots(p.bytes, p.prefixLength).map((s) => this.values[s - 1] as T);
  }

  /** Removes every route. */
  clear(): void {
    for (const cidr of [...this.routes.keys()]) this.remove(cidr);
  }

  /** Canonical CIDR → value for every route (a copy). */
  entries(): [string, T][] {
    return [...this.routes.entries()];
  }

  /** Longest-prefix match for an address given as text or as 4/16 bytes. */
  lookup(address: string | Uint8Array): T | undefined {
    const bytes = addressBytes(address);
    if (bytes.length === 4) {
      return this.lookupV4(((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0);
    }
    return this.lookupV6(bytes, 0);
  }

  /** Longest-prefix match for an IPv4 address as an unsigned 32-bit integer (the hot path). */
  lookupV4(address: number): T | undefined {
    const { children, slot } = this.v4;
    let best = slot[0]!;
    let node = 0;
    for (let shift = 31; shift >= 0; shift--) {
      node = children[(node << 1) | ((address >>> shift) & 1)]!;
      if (node === 0) break;
      const s = slot[node]!;
      if (s !== 0) best = s;
    }
    return best === 0 ? undefined : this.values[best - 1];
  }

  /** Longest-prefix match for the 16 IPv6 address bytes at `offset` of `bytes`. */
  lookupV6(bytes: Uint8Array, offset = 0): T | undefined {
    const { children, slot } = this.v6;
    let best = slot[0]!;
    let node = 0;
    outer: for (let i = 0; i < 16; i++) {
      const byte = bytes[offset + i]!;
      for (let shift = 7; shift >= 0; shift--) {
        node = children[(node << 1) | ((byte >> shift) & 1)]!;
        if (node === 0) break outer;
        const s = slot[node]!;
        if (s !== 0) best = s;
      }
    }
    return best === 0 ? undefined : this.values[best - 1];
  }
}
