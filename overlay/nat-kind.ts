// What kind of NAT sits between this node and the internet, judged from the mappings public
// reflectors saw our data socket's datagrams come from (overlay/reflection.ts):
//   none                  a reflector saw one of our own addresses and our own port: public
//   endpoint-independent  two or more reflectors saw the same mapping: peers can reach us on it
//   endpoint-dependent    reflectors saw different mappings: a new port per destination, so a
//                         mapping one reflector saw says nothing about the next peer
//   unknown               no reflection yet, or only one reflector that saw a NAT mapping
// Pure: no sockets, no clocks.
import type { UdpEndpoint } from './udp-types.ts';

export const NAT_KINDS = ['none', 'endpoint-independent', 'endpoint-dependent', 'unknown'] as const;
export type NatKind = (typeof NAT_KINDS)[number];

export interface Reflection {
  /** The reflector node that answered. */
  reflector: string;
  /** Where it saw our datagram come from. */
  mapped: UdpEndpoint;
  at: number;
}

export interface NatSelf {
  /** We announce a public address (operator's configuration): no NAT to discover. */
  public: boolean;
  /** Our data socket's port. */
  port: number;
  /** Addresses on our interfaces. */
  localIps: ReadonlySet<string>;
}

export function classifyNat(self: NatSelf, reflections: readonly Reflection[]): NatKind {
  if (self.public) return 'none';
  if (reflections.length === 0) return 'unknown';
  if (reflections.some((r) => r.mapped.port === self.port && self.localIps.has(r.mapped.ip))) return 'none';
  const distinct = new Set(reflections.map((r) => `${r.mapped.ip}|${r.mapped.port}`));
  if (distinct.size > 1) return 'endpoint-dependent';
  const reflectors = new Set(reflections.map((r) => r.reflector));
  return reflectors.size >= 2 ? 'endpoint-independent' : 'unknown';
}

/**
 * The reflected mappings worth offering to peers as candidates: every distinct mapping,
 * unless the NAT is endpoint-dependent (a mapping towards a reflector is not the one a peer
 * would see, so offering it only makes peers probe a dead port).
 */
export function offerableMappings(kind: NatKind, reflections: readonly Reflection[]): UdpEndpoint[] {
  if (kind === 'endpoint-dependent') return [];
  const seen = new Set<string>();
  const out: UdpEndpoint[] = [];
  for (const r of reflections) {
    const k = `${r.mapped.ip}|${r.mapped.port}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push({ ...r.mapped });
  }
  return out;
}
