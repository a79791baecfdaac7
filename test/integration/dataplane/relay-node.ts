// A UDP relay process for the relay integration test and the bench: a UdpRelay in the
// namespace it runs in, driven over stdin lines like udp-node.ts:
//
//   ip netns exec NS node test/integration/dataplane/relay-node.ts --bind :: --port 7200
//     [--pps N] [--bps N]
//
// Commands: "<id> <command> [json]" → {"id":..,"result":..} | {"id":..,"error":..}.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { UdpRelay } from '../../../dataplane/udp-relay.ts';

const { values: args } = parseArgs({
  options: {
    bind: { type: 'string', default: '::' },
    port: { type: 'string', default: '0' },
    pps: { type: 'string', default: '0' },
    bps: { type: 'string', default: '0' },
  },
});

const relay = UdpRelay.open({
  bind: args.bind!,
  port: Number(args.port),
  packetsPerSecond: Number(args.pps),
  bytesPerSecond: Number(args.bps),
});

function emit(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** This process's resident set in KiB and CPU seconds so far. */
function usage(): { rssKb: number; cpuSeconds: number } {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  const u = process.cpuUsage();
  return { rssKb: Number(m?.[1] ?? 0), cpuSeconds: (u.user + u.system) / 1e6 };
}

// biome-ignore lint/suspicious/noExplicitAny: the argument is whatever JSON the test sent
const commands: Record<string, (arg: any) => unknown> = {
  'add-binding': (a: { a: string; b: string }) =>
    relay.addBinding(a.a, a.b).map((g) => ({ ...g, token: Buffer.from(g.token).toString('hex') })),
  'remove-binding': (a: { id: number }) => relay.removeBinding(a.id),
  binding: (a: { id: number }) => relay.binding(a.id) ?? null,
  stats: () => ({ relay: relay.stats(), ...usage() }),
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const [id, cmd, ...rest] = line.trim().split(' ');
  const json = rest.join(' ');
  try {
    const handler = commands[cmd ?? ''];
    if (!handler) throw new Error(`unknown command ${cmd}`);
    emit({ id, result: handler(json ? JSON.parse(json) : undefined) });
  } catch (err) {
    emit({ id, error: String(err) });
  }
});

function shutdown(): void {
  relay.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown);
emit({ event: 'ready', port: relay.port });
