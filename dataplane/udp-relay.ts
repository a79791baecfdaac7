// The UDP relay: forwards the members' sealed session datagrams between the two members of
// a binding without opening them (dataplane/native/relay.c: the forwarding rule, the
// allocate datagram's layout, limits and drop reasons). This file is its TypeScript face —
// open/close, bindings with their caps (relay-ledger.ts), counters — and the member side's
// allocate datagram builder. Who may get a binding (cluster members only, over
// authenticated libp2p) is overlay/relay-binding.ts's business.
import { isIP } from 'node:net';
import { RelayLedger } from './relay-ledger.ts';
import { type UdpEndpoint, udpNative } from './udp-session.ts';

export interface UdpRelayOptions {
  /** Local address: '0.0.0.0', '::' (takes IPv4 too) or one address. */
  bind: string;
  /** 0 lets the kernel pick (read it back from `port`). */
  port: number;
  /** Bindings in all (default 4096). */
  maxBindings?: number;
  /** Bindings one member may be part of (default 64). */
  maxBindingsPerMember?: number;
  /** Each member's forwarding limit in datagrams per second (default 0 = unlimited). */
  packetsPerSecond?: number;
  /** Each member's forwarding limit in bytes per second (default 0 = unlimited). */
  bytesPerSecond?: number;
  /** Bucket depth as seconds of the rate (default 0.05; never below one 64 KiB GRO train). */
  burstSeconds?: number;
}

export interface RelayMemberInfo {
  /** The endpoint its last valid allocate came from; null until then. */
  endpoint: UdpEndpoint | null;
  /** The receiver indexes it registered (the peer's session localIndexes). */
  indexes: number[];
  /** Datagrams and bytes forwarded from this member to the other. */
  packets: number;
  bytes: number;
  rateDrops: number;
  /** Its datagrams dropped because the other member had no endpoint yet. */
  halfOpenDrops: number;
  allocations: number;
  /** Milliseconds since its last forwarded datagram or allocate, -1 when none. */
  lastRxAgeMs: number;
}

export interface RelayBindingInfo {
  members: [RelayMemberInfo, RelayMemberInfo];
  createdAgeMs: number;
}

export interface RelayStats {
  rxDatagrams: number;
  txDatagrams: number;
  txBytes: number;
  rxBatches: number;
  bindings: number;
  /** Whether GRO trains are forwarded as UDP_SEGMENT messages. */
  gso: boolean;
  /**
   * Drops by reason: short, bad-type, oversize, unknown-source, half-open, rate-limited,
   * bad-allocate, no-binding, auth-failed, stale-allocate, endpoint-taken, tx-full, tx-error,
   * socket-overflow.
   */
  drops: Record<string, number>;
}

/** What one member needs to use a binding: sent to it alone over its authenticated stream. */
export interface RelayGrant {
  bindingId: number;
  /** Its side in the binding (0 or 1): goes into its allocate datagrams. */
  member: 0 | 1;
  /** 32 secret bytes: the HMAC key of its allocate datagrams. */
  token: Uint8Array;
  /** The relay's UDP port. */
  port: number;
  /** The other member. */
  peer: string;
}

interface RelayHandle {
  readonly port: number;
}

interface NativeRelay {
  relayOpen(opts: {
    bind: string;
    port: number;
    maxBindings: number;
    packetsPerSecond: number;
    bytesPerSecond: number;
    burstSeconds: number;
  }): RelayHandle;
  relayAddBinding(h: RelayHandle, id: number, token0: Uint8Array, token1: Uint8Array): void;
  relayRemoveBinding(h: RelayHandle, id: number): boolean;
  relayBinding(h: RelayHandle, id: number): RelayBindingInfo | undefined;
  relayStats(h: RelayHandle): RelayStats;
  relayClose(h: RelayHandle): void;
  relayAllocateDatagram(
    token: Uint8Array,
    bindingId: number,
    member: number,
    counter: bigint,
    indexes: number[],
  ): Uint8Array;
}

function relayNative(): NativeRelay {
  return udpNative() as unknown as NativeRelay;
}

function nonNegative(name: string, v: number | undefined, fallback: number): number {
  const x = v ?? fallback;
  if (!Number.isFinite(x) || x < 0) throw new RangeError(`${name} must be a number ≥ 0, got ${v}`);
  return x;
}

export class UdpRelay {
  /** The bound UDP port (the kernel's pick when opened with port 0). */
  readonly port: number;
  readonly #native: NativeRelay;
  readonly #handle: RelayHandle;
  readonly #ledger: RelayLedger;
  #closed = false;
  #finalStats: RelayStats | undefined;

  private constructor(n: NativeRelay, opts: UdpRelayOptions) {
    this.#native = n;
    this.#ledger = new RelayLedger({
      maxBindings: opts.maxBindings ?? 4096,
      maxBindingsPerMember: opts.maxBindingsPerMember ?? 64,
    });
    this.#handle = n.relayOpen({
      bind: opts.bind,
      port: opts.port,
      maxBindings: this.#ledger.limits.maxBindings,
      packetsPerSecond: nonNegative('packetsPerSecond', opts.packetsPerSecond, 0),
      bytesPerSecond: nonNegative('bytesPerSecond', opts.bytesPerSecond, 0),
      burstSeconds: opts.burstSeconds ?? 0.05,
    });
    this.port = this.#handle.port;
  }

  /** Binds the relay socket and starts its forwarding thread. Throws an Error whose message starts with the errno name. */
  static open(opts: UdpRelayOptions): UdpRelay {
    if (isIP(opts.bind) === 0) throw new TypeError(`bind must be an IP address, got ${JSON.stringify(opts.bind)}`);
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)
      throw new RangeError(`port must be 0-65535, got ${opts.port}`);
    return new UdpRelay(relayNative(), opts);
  }

  /**
   * A binding between two members (the existing one is replaced: new id, new tokens, the
   * old endpoints forgotten). Returns each member's grant. Throws RelayCapError at a cap.
   */
  addBinding(a: string, b: string): [RelayGrant, RelayGrant] {
    const old = this.#ledger.find(a, b);
    if (old) this.removeBinding(old.id);
    const x = this.#ledger.create(a, b);
    try {
      this.#native.relayAddBinding(this.#handle, x.id, x.tokens[0], x.tokens[1]);
    } catch (err) {
      this.#ledger.remove(x.id);
      throw err;
    }
    return [this.grant(x.id, a)!, this.grant(x.id, b)!];
  }

  /** A member's grant of an existing binding (the same token again), or undefined when it is not a member of it. */
  grant(id: number, member: string): RelayGrant | undefined {
    const x = this.#ledger.get(id);
    const side = x ? x.members.indexOf(member) : -1;
    if (!x || (side !== 0 && side !== 1)) return undefined;
    return {
      bindingId: x.id,
      member: side,
      token: new Uint8Array(x.tokens[side]),
      port: this.port,
      peer: x.members[1 - side]!,
    };
  }

  /** Forgets a binding: its tokens stop working and its datagrams count as unknown-source. */
  removeBinding(id: number): boolean {
    const known = this.#ledger.remove(id);
    const native = !this.#closed && this.#native.relayRemoveBinding(this.#handle, id);
    return known || native;
  }

  /** Removes every binding of a member (it left the cluster or disconnected); returns how many. */
  removeMember(member: string): number {
    const ids = this.#ledger.bindingsOf(member);
    for (const id of ids) this.removeBinding(id);
    return ids.length;
  }

  /**
   * Removes bindings older than `maxIdleMs` in which neither member sent anything for
   * `maxIdleMs` (tokens expire with their binding). Returns the removed ids.
   */
  sweepIdle(maxIdleMs: number): number[] {
    const removed: number[] = [];
    for (const id of this.#ledger.ids()) {
      const info = this.binding(id);
      if (!info || info.createdAgeMs < maxIdleMs) continue;
      const idle = info.members.every((m) => m.lastRxAgeMs < 0 || m.lastRxAgeMs >= maxIdleMs);
      if (idle && this.removeBinding(id)) removed.push(id);
    }
    return removed;
  }

  /** The members' peer names of a binding. */
  members(id: number): readonly [string, string] | undefined {
    return this.#ledger.get(id)?.members;
  }

  bindingsOf(member: string): number[] {
    return this.#ledger.bindingsOf(member);
  }

  binding(id: number): RelayBindingInfo | undefined {
    if (this.#closed) return undefined;
    return this.#native.relayBinding(this.#handle, id);
  }

  stats(): RelayStats {
    if (this.#finalStats) return structuredClone(this.#finalStats);
    return this.#native.relayStats(this.#handle);
  }

  /** Stops the thread, closes the socket, forgets every binding. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#finalStats = { ...this.stats(), bindings: 0 };
    this.#closed = true;
    this.#native.relayClose(this.#handle);
    for (const id of this.#ledger.ids()) this.#ledger.remove(id);
  }

  get closed(): boolean {
    return this.#closed;
  }
}

export interface AllocateArgs {
  token: Uint8Array;
  bindingId: number;
  member: 0 | 1;
  /** The peer's session localIndexes this member sends to (1-4: current, and a rekey's next). */
  indexes: readonly number[];
  /** Strictly increasing per binding and member; default: relayCounter(). */
  counter?: bigint;
}

let lastCounter = 0n;
/** A counter that only grows, across restarts too (microseconds of wall time, bumped on ties). */
export function relayCounter(): bigint {
  const now = BigInt(Date.now()) * 1000n;
  lastCounter = now > lastCounter ? now : lastCounter + 1n;
  return lastCounter;
}

/** The 64-byte allocate datagram a member sends from its data socket (UdpDataSocket.sendRelayAllocate). */
export function relayAllocateDatagram(a: AllocateArgs): Uint8Array {
  if (a.indexes.length > 4) throw new RangeError('at most 4 receiver indexes per allocate');
  return relayNative().relayAllocateDatagram(a.token, a.bindingId, a.member, a.counter ?? relayCounter(), [
    ...a.indexes,
  ]);
}
