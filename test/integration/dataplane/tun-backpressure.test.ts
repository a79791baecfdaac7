// When JS stalls, the TUN reader must block (bounded hand-off queue) and let the kernel's
// TUN queue drop and count, instead of buffering without limit; afterwards it keeps working.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { configureInterface, ensureRoute } from '../../../common/host-net/index.ts';
import { createNetns, deleteNetns, runIn, runPrefix } from '../../../common/netns.ts';
import { TunDevice } from '../../../dataplane/tun-device.ts';
import type { Packet } from '../../../dataplane/types.ts';

const prefix = runPrefix('emtbp');
const ns = `${prefix}n`;
let tun: TunDevice | undefined;
const dir = mkdtempSync(join(tmpdir(), 'em-tbp-'));
const doneFile = join(dir, 'blaster-done');

beforeAll(async () => {
  await createNetns(ns);
});

afterAll(async () => {
  tun?.close();
  await deleteNetns(ns);
  rmSync(dir, { recursive: true, force: true });
});

// Sends one datagram, waits, blasts 20,000 1,000-byte datagrams, then writes the done file
// (which ends the test's stall) and prints how many the kernel accepted from the socket.
const blaster = `
const s = require('node:dgram').createSocket('udp4');
const buf = Buffer.alloc(1000, 7);
let sent = 0;
const sendOne = () => new Promise((r) => s.send(buf, 9, '10.80.1.5', (e) => { if (!e) sent++; r(); }));
(async () => {
  await sendOne();
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < 20000; i += 100) { const w = []; for (let j = 0; j < 100; j++) w.push(sendOne()); await Promise.all(w); }
  require('node:fs').writeFileSync(${JSON.stringify(doneFile)}, '');
  console.log(sent); s.close();
})();`;

function echoReply(p: Packet): Packet | undefined {
  const d = p.data;
  if (d.length < 28 || d[0] !== 0x45 || d[9] !== 1 || d[20] !== 8) return undefined;
  const r = Uint8Array.from(d);
  r.set(d.subarray(16, 20), 12);
  r.set(d.subarray(12, 16), 16);
  r[20] = 0;
  // Echo → reply changes only the type byte: adjust the ICMP checksum incrementally (RFC 1624).
  let sum = ((r[22] ?? 0) << 8) + (r[23] ?? 0) + 0x0800;
  sum = (sum & 0xffff) + (sum >>> 16);
  r[22] = sum >> 8;
  r[23] = sum & 0xff;
  return { vnet: p.vnet, data: r };
}

it('blocks the reader while JS is busy, lets the kernel drop, then recovers', async () => {
  const dev = TunDevice.open({ name: `${prefix}t`, netns: ns, offload: false });
  tun = dev;
  await configureInterface({ dev: dev.name, address: '10.80.0.1/32', netns: ns });
  await ensureRoute({ dst: '10.80.1.0/24', dev: dev.name }, { netns: ns });
  let udpDelivered = 0;
  let stalled = false;
  dev.onBatch((batch) => {
    // Stall from the blaster's first datagram until it has sent everything.
    if (!stalled && batch.some((p) => p.data[9] === 17)) {
      stalled = true;
      const until = Date.now() + 30_000;
      while (Date.now() < until && !existsSync(doneFile)) {
        // The JS thread is stuck, as under a long GC pause or an overloaded forwarder.
      }
    }
    const replies: Packet[] = [];
    for (const p of batch) {
      if (p.data[9] === 17) udpDelivered++;
      const r = echoReply(p);
      if (r) replies.push(r);
    }
    if (replies.length) dev.write(replies);
  });
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', blaster], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  await new Promise((resolve) => child.on('exit', resolve));
  await new Promise((r) => setTimeout(r, 500));
  const sent = Number(out.trim());
  const link = JSON.parse(await run('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'dev', dev.name])) as {
    stats64: { tx: { dropped: number } };
  }[];
  const kernelDropped = link[0]?.stats64.tx.dropped ?? 0;
  console.log(
    `[tun-backpressure] sent ${sent}, delivered to JS ${udpDelivered}, dropped by the kernel ${kernelDropped}`,
  );
  // In flight at most: 8 queued batches + 1 being filled + 1 delivered, ≤ 254 packets each
  // of 1,028 bytes in a 256 KiB batch, plus the kernel's TUN queue (txqueuelen 500).
  expect(sent).toBeGreaterThan(19_000);
  expect(udpDelivered).toBeLessThanOrEqual(10 * 254 + 500 + 64);
  expect(kernelDropped).toBeGreaterThan(0);
  // Every datagram is accounted for: delivered to JS or dropped (and counted) by the kernel.
  expect(Math.abs(udpDelivered + kernelDropped - sent)).toBeLessThanOrEqual(5);
  // Still alive: a ping round trip through JS.
  const ping = await runIn(ns, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '10.80.1.7']);
  expect(ping).toMatch(/2 packets transmitted, 2 received/);
  expect(dev.stats().errors).toBe(0);
});
