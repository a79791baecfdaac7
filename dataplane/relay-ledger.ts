// The relay's bookkeeping of bindings by member (no sockets here): which bindings exist,
// who their two members are, and the caps — bindings in all, bindings per member. Ids are
// random u32s and tokens 32 random bytes each, so neither is guessable from another binding.
import { randomBytes, randomInt } from 'node:crypto';

export const RELAY_TOKEN_BYTES = 32;

export interface LedgerLimits {
  /** Bindings the relay holds in all. */
  maxBindings: number;
  /** Bindings one member (peer) may be part of. */
  maxBindingsPerMember: number;
}

export interface LedgerBinding {
  id: number;
  /** members[0] and members[1]: the peers; the index is each one's side in allocate datagrams. */
  members: readonly [string, string];
  /** tokens[side]: the secret that side signs its allocate datagrams with. */
  tokens: readonly [Uint8Array, Uint8Array];
}

export class RelayCapError extends Error {
  readonly code: 'relay-full' | 'member-full' | 'bad-pair';
  constructor(code: RelayCapError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

export class RelayLedger {
  readonly limits: LedgerLimits;
  readonly #byId = new Map<number, LedgerBinding>();
  readonly #byMember = new Map<string, Set<number>>();

  constructor(limits: LedgerLimits) {
    for (const [k, v] of Object.entries(limits))
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`${k} must be a positive integer, got ${v}`);
    this.limits = { ...limits };
  }

  get size(): number {
    return this.#byId.size;
  }

  /** The binding for the pair (either order), if one exists. */
  find(a: string, b: string): LedgerBinding | undefined {
    const mine = this.#byMember.get(a);
    if (!mine) return undefined;
    for (const id of mine) {
      const x = this.#byId.get(id)!;
      if ((x.members[0] === a && x.members[1] === b) || (x.members[0] === b && x.members[1] === a)) return x;
    }
    return undefined;
  }

  /** A new binding for the pair with fresh tokens; throws RelayCapError when a cap is reached. */
  create(a: string, b: string): LedgerBinding {
    if (!a || !b || a === b) throw new RelayCapError('bad-pair', 'a binding joins two different members');
    if (this.#byId.size >= this.limits.maxBindings)
      throw new RelayCapError('relay-full', `the relay holds ${this.limits.maxBindings} bindings`);
    for (const m of [a, b])
      if ((this.#byMember.get(m)?.size ?? 0) >= this.limits.maxBindingsPerMember)
        throw new RelayCapError('member-full', `${m} is in ${this.limits.maxBindingsPerMember} bindings already`);
    let id: number;
    do id = randomInt(1, 0xffffffff);
    while (this.#byId.has(id));
    const binding: LedgerBinding = {
      id,
      members: [a, b],
      tokens: [new Uint8Array(randomBytes(RELAY_TOKEN_BYTES)), new Uint8Array(randomBytes(RELAY_TOKEN_BYTES))],
    };
    this.#byId.set(id, binding);
    for (const m of [a, b]) {
      const set = this.#byMember.get(m) ?? new Set<number>();
      set.add(id);
      this.#byMember.set(m, set);
    }
    return binding;
  }

  get(id: number): LedgerBinding | undefined {
    return this.#byId.get(id);
  }

  /** Forgets a binding and wipes its tokens. */
  remove(id: number): boolean {
    const x = this.#byId.get(id);
    if (!x) return false;
    this.#byId.delete(id);
    for (const m of x.members) {
      const set = this.#byMember.get(m);
      set?.delete(id);
      if (set?.size === 0) this.#byMember.delete(m);
    }
    for (const t of x.tokens) t.fill(0);
    return true;
  }

  /** The binding ids a member is part of. */
  bindingsOf(member: string): number[] {
    return [...(this.#byMember.get(member) ?? [])];
  }

  ids(): number[] {
    return [...this.#byId.keys()];
  }
}
