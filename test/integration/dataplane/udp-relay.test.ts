// The UDP relay between real namespaces: A and B (real TUNs + forwarders + UdpDataSockets
// with one session keyed by the test) reach each other only through the relay namespace,
// whose relay process forwards their sealed datagrams without keys. iperf3 TCP pod → pod
// through the relay; a third party's datagrams and allocates are dropped and counted while it
// runs; after a relay restart and re-registration traffic is back within 5 s; with 50
// bindings carrying traffic the relay's RSS stays within 10 MB of the 1-binding figure.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blasterScript, R_A, R_B, RELAY_PORT, RelayTrio, type WireGrant } from './relay-harness.ts';
import { sleep } from './udp-harness.ts';

const tmp = mkdtempSync(join(tmpdir(), 'em-relay-'));
const trio = new RelayTrio();

beforeAll(async () => {
  await trio.start();
});

afterAll(async () => {
  await trio.close();
  rmSync(tmp, { recursive: true, force: true });
});

const gbps = (bps: number) => `${(bps / 1e9).toFixed(2)} Gbit/s`;

/** Runs relay-blaster.ts in `ns`; resolves with its last JSON line once it exits. */
function blaster(ns: string, relayIp: string, grants: object[], extra: string[]) {
  const file = join(tmp, `grants-${randomBytes(4).toString('hex')}.json`);
  writeFileSync(file, JSON.stringify(grants));
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      blasterScript,
      '--relay',
      `${relayIp}:${RELAY_PORT}`,
      '--grants',
      file,
      ...extra,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  trio.extra.push(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-2000);
  });
  const lines: string[] = [];
  const registered = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      lines.push(l);
      if (l.includes('registered')) resolve();
    });
    child.once('exit', () => reject(new Error(`blaster exited early: ${stderr}`)));
  });
  const done = new Promise<Record<string, number>>((resolve) =>
    child.once('exit', () => resolve(JSON.parse(lines.at(-1) ?? '{}') as Record<string, number>)),
  );
  return { child, registered, done };
}

describe('UDP relay between namespaces', () => {
  it('carries iperf3 TCP pod → pod through the relay, the sealed datagrams forwarded unopened', async () => {
    const r0 = await trio.relayStats();
    const r = await trio.iperf(3);
    const r1 = await trio.relayStats();
    const info = await trio.binding(trio.grants[0].bindingId);
    console.log(`TCP through the UDP relay: ${gbps(r.bitsPerSecond)} (loaded machine)`);
    expect(r.bytes).toBeGreaterThan(2_000_000);
    // every byte crossed the relay: the relay forwarded at least what iperf3 moved
    expect(r1.relay.txBytes - r0.relay.txBytes).toBeGreaterThan(r.bytes);
    expect(info!.members[0].bytes).toBeGreaterThan(r.bytes);
    expect(info!.members[1].packets).toBeGreaterThan(100); // the ACKs came back through it
    expect(r1.relay.drops['unknown-source'] ?? 0).toBe(0);
    const b = await trio.nodeB.stats();
    expect(b.udp.drops).toEqual({}); // nothing arrived garbled: the relay did not touch the datagrams
  });

  it("refuses a third party's datagrams and allocates, counted, while iperf3 keeps going", async () => {
    const before = (await trio.relayStats()).relay.drops;
    const [ga] = trio.grants;
    const fake = Buffer.alloc(200);
    fake[0] = 4;
    fake.writeUInt32LE(trio.keys.b.localIndex, 4); // B's receiver index: a guess an outsider can make
    const forged = Buffer.alloc(64);
    forged[0] = 6;
    forged[2] = 1;
    forged.writeUInt32LE(ga.bindingId, 4); // even knowing the binding id, no token
    forged.writeBigUInt64LE(BigInt(Date.now()) * 10_000n, 8);
    forged.writeUInt32LE(trio.keys.a.remoteIndex, 16);
    randomBytes(32).copy(forged, 32);
    const flow = trio.iperf(3);
    await sleep(1000);
    // A's attacker socket (another port in A's namespace: not the registered endpoint)
    const injected = await trio.nodeA.command<number>('inject', {
      to: { ip: R_A, port: RELAY_PORT },
      datagrams: [...Array.from({ length: 50 }, () => fake.toString('hex')), forged.toString('hex')],
    });
    expect(injected).toBe(51);
    const r = await flow;
    await sleep(500);
    const after = (await trio.relayStats()).relay.drops;
    const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
    expect(d('unknown-source')).toBe(50);
    expect(d('auth-failed')).toBe(1);
    expect(r.bytes).toBeGreaterThan(1_000_000);
    // A's endpoint is still its data socket, and traffic still flows
    const info = await trio.binding(ga.bindingId);
    expect(info!.members[0].endpoint!.port).toBe(7100);
    expect(await trio.pingOnce()).toBe(true);
  });

  it("a third member cannot inject into or read from A and B's binding", async () => {
    // C has its own binding (with X) and registers B's receiver index under it
    const [gc, gx] = await trio.relay.command<[WireGrant, WireGrant]>('add-binding', { a: 'nodeC', b: 'nodeX' });
    const x = blaster(trio.nsB, R_B, [{ ...gx, index: 1 }], ['--listen']);
    await x.registered;
    const c = blaster(trio.nsA, R_A, [{ ...gc, index: trio.keys.b.localIndex }], ['--seconds', '2']);
    await c.registered;
    const b0 = await trio.nodeB.stats();
    const info0 = await trio.binding(trio.grants[0].bindingId);
    const r = await trio.iperf(2);
    const fromC = await c.done;
    x.child.stdin!.end();
    const atX = await x.done;
    const b1 = await trio.nodeB.stats();
    const info1 = await trio.binding(trio.grants[0].bindingId);
    expect(fromC.sent).toBeGreaterThan(100);
    // C's datagrams went to its own binding's peer only: B opened nothing forged
    expect(atX.received).toBeGreaterThan(0);
    expect(b1.udp.drops).toEqual(b0.udp.drops);
    expect(b1.udp.drops['auth-failed'] ?? 0).toBe(0);
    // C read nothing of the A–B flow, and A's registration is untouched
    expect(fromC.received).toBe(0);
    expect(info1!.members[0].endpoint).toEqual(info0!.members[0].endpoint);
    expect(info1!.members[1].endpoint).toEqual(info0!.members[1].endpoint);
    expect(r.bytes).toBeGreaterThan(1_000_000);
    await trio.relay.command('remove-binding', { id: gc.bindingId });
  });

  it('is back within 5 s of re-registration after a relay restart', async () => {
    expect(await trio.pingOnce()).toBe(true);
    await trio.stopRelay();
    expect(await trio.pingOnce()).toBe(false); // no relay, no path
    await trio.startRelay();
    const start = Date.now();
    await trio.bind(); // new binding, new tokens: the members register again
    let back = -1;
    while (Date.now() - start < 10_000) {
      if (await trio.pingOnce()) {
        back = Date.now() - start;
        break;
      }
    }
    console.log(`relay restart: traffic back ${back} ms after the new relay was up`);
    expect(back).toBeGreaterThanOrEqual(0);
    expect(back).toBeLessThan(5000);
    const r = await trio.iperf(2);
    expect(r.bytes).toBeGreaterThan(1_000_000);
  });

  it('keeps its RSS within 10 MB from 1 to 50 bindings carrying traffic', async () => {
    // 1 binding under load
    await trio.iperf(3);
    const one = await trio.relayStats();
    // 49 more bindings, each with its own pair of endpoints, all sending while iperf3 runs
    const grants: [WireGrant, WireGrant][] = [];
    for (let i = 0; i < 49; i++)
      grants.push(await trio.relay.command('add-binding', { a: `blastA${i}`, b: `blastB${i}` }));
    const listen = blaster(
      trio.nsB,
      R_B,
      grants.map(([, g], i) => ({ ...g, index: 6000 + i })),
      ['--listen'],
    );
    await listen.registered;
    const send = blaster(
      trio.nsA,
      R_A,
      grants.map(([g], i) => ({ ...g, index: 6000 + i })),
      ['--seconds', '4'],
    );
    await send.registered;
    const r = await trio.iperf(3);
    const sent = await send.done;
    listen.child.stdin!.end();
    const received = await listen.done;
    const fifty = await trio.relayStats();
    const diffMb = (fifty.rssKb - one.rssKb) / 1024;
    console.log(
      `relay RSS: 1 binding ${(one.rssKb / 1024).toFixed(1)} MB, 50 bindings ${(fifty.rssKb / 1024).toFixed(1)} MB ` +
        `(Δ ${diffMb.toFixed(1)} MB); blasters sent ${sent.sent}, received ${received.received}; iperf3 ${gbps(r.bitsPerSecond)}`,
    );
    expect(fifty.relay.bindings).toBe(50);
    expect(sent.sent).toBeGreaterThan(1000);
    expect(received.received).toBeGreaterThan(500); // the 49 bindings really forwarded
    expect(r.bytes).toBeGreaterThan(1_000_000);
    expect(Math.abs(diffMb)).toBeLessThan(10);
  });
});
