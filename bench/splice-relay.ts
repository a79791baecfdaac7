// The relay's TCP splice (overlay/splice-relay.ts) on loopback: what one splice moves against
// a direct loopback TCP connection in the same run, the relay's CPU per GB, and the relay
// process's memory with 1 and with N splices under load. The relay runs in this process;
// the members (senders and receivers) run in a child process, so the relay's figures are
// its own. No root needed.
// Run: node bench/splice-relay.ts [--seconds 3] [--pairs 200]
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SpliceRelay } from '../overlay/splice-relay.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    pairs: { type: 'string', default: '200' },
    client: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const CHUNK = Buffer.alloc(64 * 1024, 0x5a);

interface Job {
  port: number;
  tokens: Array<[string, string]>;
  seconds: number;
}

// --- the members' side (child process) ---------------------------------------------------

async function connectWith(port: number, token?: string): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  if (token !== undefined) s.write(Buffer.from(token, 'base64'));
  return s;
}

/** Sends from each pair's first socket to its second for `seconds`; returns bytes received. */
async function flow(pairs: Array<[net.Socket, net.Socket]>, secs: number): Promise<number> {
  let received = 0;
  let running = true;
  for (const [tx, rx] of pairs) {
    rx.on('data', (d: Buffer) => {
      received += d.length;
    });
    const pump = () => {
      while (running && tx.write(CHUNK)) {}
    };
    tx.on('drain', pump);
    pump();
  }
  await new Promise((r) => setTimeout(r, secs * 1000));
  running = false;
  return received;
}

async function client(): Promise<void> {
  const out = (m: object) => process.stdout.write(`${JSON.stringify(m)}\n`);
  const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  for (;;) {
    const line = (await input.next()).value as string;
    const job = JSON.parse(line) as Job & { cmd: 'direct' | 'splice' | 'close' };
    if (job.cmd === 'close') process.exit(0);
    if (job.cmd === 'direct') {
      const server = net.createServer({ noDelay: true });
      const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const tx = await connectWith((server.address() as net.AddressInfo).port);
      const bytes = await flow([[tx, await accepted]], job.seconds);
      tx.destroy();
      server.close();
      out({ bytes });
      continue;
    }
    const pairs: Array<[net.Socket, net.Socket]> = [];
    for (const [a, b] of job.tokens) pairs.push([await connectWith(job.port, a), await connectWith(job.port, b)]);
    // The relay says when it has paired them all; then every flow starts at once.
    out({ connected: pairs.length });
    await input.next();
    const bytes = await flow(pairs, job.seconds);
    out({ bytes, held: pairs.length });
    // Keep the sockets open (and flowing) until told to close, so the relay's memory can be read.
  }
}

// --- the relay's side (this process) -------------------------------------------------------

async function main(): Promise<void> {
  const relay = await SpliceRelay.listen({
    host: '127.0.0.1',
    port: 0,
    limits: { perMember: 100_000, total: 100_000, pending: 100_000 },
  });
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--client'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  // The relay's memory is read while the flows run (every 100 ms), its peak kept.
  const peak = { rss: 0, buffered: 0, active: 0 };
  const ask = async (msg: object): Promise<{ bytes: number }> => {
    peak.rss = peak.buffered = peak.active = 0;
    const sampler = setInterval(() => {
      peak.rss = Math.max(peak.rss, process.memoryUsage().rss);
      peak.buffered = Math.max(peak.buffered, relay.bufferedBytes());
      peak.active = Math.max(peak.active, relay.active);
    }, 100);
    child.stdin!.write(`${JSON.stringify(msg)}\n`);
    try {
      if ('tokens' in msg) {
        await lines.next(); // connected
        const want = relay.counters.issued;
        const deadline = Date.now() + 30_000;
        while (relay.counters.spliced + relay.counters.expired < want && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 20));
        child.stdin!.write('go\n');
      }
      return JSON.parse((await lines.next()).value as string);
    } finally {
      clearInterval(sampler);
    }
  };
  const issue = (n: number, tag: string) =>
    Array.from({ length: n }, (_, i) => {
      const [a, b] = relay.issue({ peer: `${tag}a${i}` }, { peer: `${tag}b${i}` });
      return [Buffer.from(a).toString('base64'), Buffer.from(b).toString('base64')];
    });
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  const gbps = (bytes: number) => (bytes * 8) / seconds / 1e9;
  const rssIdle = process.memoryUsage().rss;
  console.log(`splice relay bench (loopback, ${seconds} s per measurement; shared machine: noisy)`);

  const direct = await ask({ cmd: 'direct', seconds });
  const cpu0 = process.cpuUsage();
  const one = await ask({ cmd: 'splice', port: relay.port, tokens: issue(1, 'one'), seconds });
  const cpu = process.cpuUsage(cpu0);
  const rssOne = peak.rss;
  const cpuPerGb = (cpu.user + cpu.system) / 1e6 / ((relay.bytes || 1) / 1e9);
  console.log(`direct loopback TCP         ${gbps(direct.bytes).toFixed(2)} Gbit/s`);
  console.log(
    `one splice through relay    ${gbps(one.bytes).toFixed(2)} Gbit/s (${((100 * one.bytes) / direct.bytes).toFixed(0)} % of direct), relay CPU ${cpuPerGb.toFixed(2)} s/GB`,
  );
  const n = Number(values.pairs);
  const many = await ask({ cmd: 'splice', port: relay.port, tokens: issue(n, 'many'), seconds });
  const rssMany = peak.rss;
  console.log(
    `${peak.active} splices under load ${gbps(many.bytes).toFixed(2)} Gbit/s together; relay buffers at most ${mb(peak.buffered)} in user space`,
  );
  console.log(
    `relay RSS (peak under load): idle ${mb(rssIdle)}, 1 splice ${mb(rssOne)}, ${peak.active} splices ${mb(rssMany)} (+${((rssMany - rssOne) / 1024 / n).toFixed(0)} KiB per added splice)`,
  );
  console.log(`relay counters ${JSON.stringify(relay.counters)}`);
  child.stdin!.write(`${JSON.stringify({ cmd: 'close' })}\n`);
  await new Promise((r) => child.once('exit', r));
  await relay.close();
}

if (values.client) await client();
else await main();
