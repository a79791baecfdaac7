// LPM micro-benchmark: lookups per second over a table of 5,000 prefixes (IPv4 and IPv6),
// with destination addresses drawn from the routed space as a forwarder would see them.
// Run: node bench/lpm.ts   (prints one line per family)
import { RouteTable } from '../dataplane/route-table.ts';

const PREFIXES = 5000;
const PROBES = 1 << 16;
const ROUNDS = 60;

function randomInt(n: number): number {
  return Math.floor(Math.random() * n);
}

function benchV4(): number {
  const table = new RouteTable<number>();
  // pod CIDRs as a cluster has them: /24 blocks inside 10.0.0.0/8, plus a few aggregates
  const networks: number[] = [];
  for (let i = 0; i < PREFIXES; i++) {
    const net = ((10 << 24) | (randomInt(1 << 16) << 8)) >>> 0;
    networks.push(net);
    table.insert(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.0/24`, i);
  }
  table.insert('10.0.0.0/8', -1);
  const probes = new Uint32Array(PROBES);
  for (let i = 0; i < PROBES; i++) probes[i] = (networks[randomInt(networks.length)]! | randomInt(256)) >>> 0;
  let found = 0;
  const start = process.hrtime.bigint();
  for (let r = 0; r < ROUNDS; r++)
    for (let i = 0; i < PROBES; i++) if (table.lookupV4(probes[i]!) !== undefined) found++;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (found !== PROBES * ROUNDS) throw new Error('a probe missed its route');
  return (PROBES * ROUNDS) / seconds;
}

function benchV6(): number {
  const table = new RouteTable<number>();
  const networks: Uint8Array[] = [];
  for (let i = 0; i < PREFIXES; i++) {
    const net = new Uint8Array(16);
    net.set([0xfd, 0x00, 0x00, 0x10, randomInt(256), randomInt(256)]);
    networks.push(net);
    const hex = (a: number, b: number) => ((net[a]! << 8) | net[b]!).toString(16);
    table.insert(`${hex(0, 1)}:${hex(2, 3)}:${hex(4, 5)}::/48`, i);
  }
  const probes = new Uint8Array(PROBES * 16);
  for (let i = 0; i < PROBES; i++) {
    probes.set(networks[randomInt(networks.length)]!, i * 16);
    for (let b = 6; b < 16; b++) probes[i * 16 + b] = randomInt(256);
  }
  let found = 0;
  const start = process.hrtime.bigint();
  for (let r = 0; r < ROUNDS / 4; r++)
    for (let i = 0; i < PROBES; i++) if (table.lookupV6(probes, i * 16) !== undefined) found++;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (found !== (PROBES * ROUNDS) / 4) throw new Error('a probe missed its route');
  return (PROBES * ROUNDS) / 4 / seconds;
}

export function runLpmBench(): { v4LookupsPerSecond: number; v6LookupsPerSecond: number } {
  benchV4(); // warm-up: let the JIT compile the lookup loops
  return { v4LookupsPerSecond: benchV4(), v6LookupsPerSecond: benchV6() };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = runLpmBench();
  console.log(`LPM ${PREFIXES} prefixes: IPv4 ${(r.v4LookupsPerSecond / 1e6).toFixed(1)} M lookups/s`);
  console.log(`LPM ${PREFIXES} prefixes: IPv6 ${(r.v6LookupsPerSecond / 1e6).toFixed(1)} M lookups/s`);
}
