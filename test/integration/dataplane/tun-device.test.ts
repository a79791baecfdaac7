// The TUN addon against the real kernel, inside namespaces this file creates.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { configureInterface, ensureRoute } from '../../../common/host-net/index.ts';
import { createNetns, deleteNetns, runIn, runPrefix } from '../../../common/netns.ts';
import { TunDevice } from '../../../dataplane/tun-device.ts';
import type { Packet } from '../../../dataplane/types.ts';
import { VNET_HDR_LEN } from '../../../dataplane/types.ts';
import { GSO_TCPV4, GSO_TCPV6, gsoType } from '../../../dataplane/vnet-header.ts';
import { withoutPrivileges } from '../../support/without-privileges.ts';

const prefix = runPrefix('emtun');
const nsA = `${prefix}a`;
const nsB = `${prefix}b`;
const devices: TunDevice[] = [];
const children: ReturnType<typeof spawn>[] = [];

function track(t: TunDevice): TunDevice {
  devices.push(t);
  return t;
}

beforeAll(async () => {
  await createNetns(nsA);
  await createNetns(nsB);
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of devices) d.close();
  await deleteNetns(nsA);
  await deleteNetns(nsB);
});

function checksum(buf: Uint8Array, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += ((buf[i] ?? 0) << 8) | (i + 1 < end ? (buf[i + 1] ?? 0) : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Builds the echo reply for an IPv4 ICMP echo request, or undefined for anything else. */
function echoReply(p: Packet): Packet | undefined {
  const d = p.data;
  if (d.length < 28 || d[0] >> 4 !== 4 || d[9] !== 1) return undefined;
  const ihl = (d[0] & 0x0f) * 4;
  if (d[ihl] !== 8) return undefined;
  const r = Uint8Array.from(d);
  r.set(d.subarray(16, 20), 12);
  r.set(d.subarray(12, 16), 16);
  r[8] = 64;
  r[10] = 0;
  r[11] = 0;
  const ipSum = checksum(r, 0, ihl);
  r[10] = ipSum >> 8;
  r[11] = ipSum & 0xff;
  r[ihl] = 0;
  r[ihl + 2] = 0;
  r[ihl + 3] = 0;
  const icmpSum = checksum(r, ihl, r.length);
  r[ihl + 2] = icmpSum >> 8;
  r[ihl + 3] = icmpSum & 0xff;
  return { vnet: new Uint8Array(VNET_HDR_LEN), data: r };
}

describe('TUN device', () => {
  it.each(['thread', 'loop', 'auto'] as const)(
    'delivers a ping to JS and carries the reply written back (reader %s)',
    async (reader) => {
      const tun = track(TunDevice.open({ name: `${prefix}p${reader[0]}`, netns: nsA, mtu: 1400, reader }));
      expect(tun.offload).toBe(true);
      expect(tun.offloadFlags).toEqual(expect.arrayContaining(['csum', 'tso4', 'tso6']));
      expect(tun.mtu).toBe(1400);
      await configureInterface({ dev: tun.name, address: '10.77.0.1/32', netns: nsA });
      await ensureRoute({ dst: '10.77.1.0/24', dev: tun.name, src: '10.77.0.1' }, { netns: nsA });
      const seen: Packet[] = [];
      const kept: Uint8Array[] = [];
      tun.onBatch((batch) => {
        const replies: Packet[] = [];
        for (const p of batch) {
          const reply = echoReply(p);
          if (!reply) continue;
          seen.push({ vnet: Uint8Array.from(p.vnet), data: Uint8Array.from(p.data) });
          kept.push(p.data); // not copied: valid only until the handler returns
          replies.push(reply);
        }
        if (replies.length) expect(tun.write(replies)).toBe(replies.length);
      });
      const out = await runIn(nsA, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.77.1.5']);
      expect(out).toMatch(/3 packets transmitted, 3 received/);
      expect(seen.length).toBe(3);
      // No read allocates a buffer: the loop reuses one, the thread a fixed pool. A batch's
      // views are emptied once its handler returned, so a packet kept by mistake reads as
      // empty, never as a later one.
      expect(kept.map((d) => d.byteLength)).toEqual([0, 0, 0]);
      const first = seen[0] as Packet;
      expect(Array.from(first.data.subarray(12, 16))).toEqual([10, 77, 0, 1]);
      expect(Array.from(first.data.subarray(16, 20))).toEqual([10, 77, 1, 5]);
      const s = tun.stats();
      expect(s.rxPackets).toBeGreaterThanOrEqual(3);
      expect(s.txPackets).toBe(3);
      expect(s.errors).toBe(0);
      tun.close();
    },
  );

  it('reads and writes GSO super-packets larger than the MTU for a TCP flow (iperf3 through a JS relay)', async () => {
    const mtu = 1400;
    const a = track(TunDevice.open({ name: `${prefix}ta`, netns: nsA, mtu }));
    const b = track(TunDevice.open({ name: `${prefix}tb`, netns: nsB, mtu }));
    await configureInterface({ dev: a.name, address: '10.78.0.1/32', netns: nsA });
    await configureInterface({ dev: b.name, address: '10.78.0.2/32', netns: nsB });
    await ensureRoute({ dst: '10.78.0.2', dev: a.name }, { netns: nsA });
    await ensureRoute({ dst: '10.78.0.1', dev: b.name }, { netns: nsB });
    let biggest: Packet | undefined;
    a.onBatch((batch) => {
      for (const p of batch) {
        if (!biggest || p.data.length > biggest.data.length) {
          biggest = { vnet: Uint8Array.from(p.vnet), data: Uint8Array.from(p.data) };
        }
      }
      b.write(batch);
    });
    b.onBatch((batch) => a.write(batch));

    const server = spawn('ip', ['netns', 'exec', nsB, 'iperf3', '-s', '-1', '-B', '10.78.0.2', '-p', '5201'], {
      stdio: 'ignore',
    });
    children.push(server);
    await new Promise((r) => setTimeout(r, 300));
    const out = await runIn(nsA, 'iperf3', ['-c', '10.78.0.2', '-p', '5201', '-t', '2', '-J']);
    const report = JSON.parse(out) as { end: { sum_received: { bytes: number } } };
    expect(report.end.sum_received.bytes).toBeGreaterThan(1_000_000);

    const sa = a.stats();
    const sb = b.stats();
    expect(sa.rxSuperPackets).toBeGreaterThan(0);
    expect(sb.txSuperPackets).toBeGreaterThan(0);
    expect(sb.txBytes).toBe(sa.rxBytes);
    expect(sa.errors + sb.errors).toBe(0);
    const big = biggest as Packet;
    expect(big.data.length).toBeGreaterThan(mtu);
    expect(gsoType(big.vnet)).toBe(GSO_TCPV4);
    // gso_size (bytes 4-5, little endian on x86) is the MSS: below the MTU.
    const gsoSize = (big.vnet[4] ?? 0) | ((big.vnet[5] ?? 0) << 8);
    expect(gsoSize).toBeGreaterThan(0);
    expect(gsoSize).toBeLessThan(mtu);
    a.close();
    b.close();
  });

  it("reader 'auto' hands reading to the thread under load and back to the loop when idle; writeBurst writes every packet", async () => {
    const a = track(TunDevice.open({ name: `${prefix}aa`, netns: nsA, mtu: 1400, reader: 'auto', writeBurst: 4 }));
    const b = track(TunDevice.open({ name: `${prefix}ab`, netns: nsB, mtu: 1400, reader: 'auto', writeBurst: 4 }));
    expect(() => TunDevice.open({ name: `${prefix}ac`, netns: nsA, writeBurst: -1 })).toThrow(/^EINVAL/);
    await configureInterface({ dev: a.name, address: '10.79.0.1/32', netns: nsA });
    await configureInterface({ dev: b.name, address: '10.79.0.2/32', netns: nsB });
    await ensureRoute({ dst: '10.79.0.2', dev: a.name }, { netns: nsA });
    await ensureRoute({ dst: '10.79.0.1', dev: b.name }, { netns: nsB });
    a.onBatch((batch) => expect(b.write(batch)).toBe(batch.length));
    b.onBatch((batch) => expect(a.write(batch)).toBe(batch.length));
    // Idle: pings are read on the loop, nothing moves to the thread.
    expect(await runIn(nsA, 'ping', ['-c', '3', '-i', '0.05', '-W', '2', '10.79.0.2'])).toMatch(/3 received/);
    expect(a.stats().readerHandoffs).toBe(0);
    const server = spawn('ip', ['netns', 'exec', nsB, 'iperf3', '-s', '-1', '-B', '10.79.0.2', '-p', '5203'], {
      stdio: 'ignore',
    });
    children.push(server);
    await new Promise((r) => setTimeout(r, 300));
    // UDP at a rate that puts several datagrams in every wake-up: the thread takes over.
    const out = await runIn(nsA, 'iperf3', ['-c', '10.79.0.2', '-p', '5203', '-t', '2', '-u', '-b', '300M', '-J']);
    const report = JSON.parse(out) as { end: { sum: { packets: number; lost_packets: number } } };
    expect(report.end.sum.packets).toBeGreaterThan(10_000);
    // Idle again (AUTO_IDLE_MS is 20 ms): every handoff has been handed back.
    await new Promise((r) => setTimeout(r, 100));
    const sa = a.stats();
    expect(sa.readerHandoffs).toBeGreaterThan(0);
    expect(sa.readerHandbacks).toBe(sa.readerHandoffs);
    const sb = b.stats();
    // B wrote every packet A read, each write accepted (the handlers' checks count as handler errors).
    expect(sb.txPackets).toBe(sa.rxPackets);
    expect(sa.errors + sb.errors + sa.handlerErrors + sb.handlerErrors).toBe(0);
    // And the loop reads again: a ping still goes through.
    expect(await runIn(nsA, 'ping', ['-c', '2', '-i', '0.05', '-W', '2', '10.79.0.2'])).toMatch(/2 received/);
    a.close();
    b.close();
  });

  it('carries IPv6 TCP as TCPV6 super-packets', async () => {
    const mtu = 1400;
    const a = track(TunDevice.open({ name: `${prefix}6a`, netns: nsA, mtu }));
    const b = track(TunDevice.open({ name: `${prefix}6b`, netns: nsB, mtu }));
    // nodad: the addresses are usable at once instead of after duplicate address detection.
    await run('ip', ['-n', nsA, 'addr', 'add', 'fd78::1/128', 'dev', a.name, 'nodad']);
    await run('ip', ['-n', nsB, 'addr', 'add', 'fd78::2/128', 'dev', b.name, 'nodad']);
    await configureInterface({ dev: a.name, netns: nsA });
    await configureInterface({ dev: b.name, netns: nsB });
    await ensureRoute({ dst: 'fd78::2/128', dev: a.name }, { netns: nsA });
    await ensureRoute({ dst: 'fd78::1/128', dev: b.name }, { netns: nsB });
    let v6Super = 0;
    a.onBatch((batch) => {
      for (const p of batch)
        if (gsoType(p.vnet) === GSO_TCPV6 && p.data.length > mtu && p.data[0] >> 4 === 6) v6Super++;
      b.write(batch);
    });
    b.onBatch((batch) => a.write(batch));
    const server = spawn('ip', ['netns', 'exec', nsB, 'iperf3', '-s', '-1', '-B', 'fd78::2', '-p', '5202'], {
      stdio: 'ignore',
    });
    children.push(server);
    await new Promise((r) => setTimeout(r, 300));
    const out = await runIn(nsA, 'iperf3', ['-6', '-c', 'fd78::2', '-p', '5202', '-t', '1', '-J']);
    const report = JSON.parse(out) as { end: { sum_received: { bytes: number } } };
    expect(report.end.sum_received.bytes).toBeGreaterThan(1_000_000);
    expect(v6Super).toBeGreaterThan(0);
    expect(a.stats().errors + b.stats().errors).toBe(0);
    a.close();
    b.close();
  });

  it('lets tcpdump on the TUN see the traffic', async () => {
    const tun = track(TunDevice.open({ name: `${prefix}d`, netns: nsA }));
    await configureInterface({ dev: tun.name, address: '10.79.0.1/32', netns: nsA });
    await ensureRoute({ dst: '10.79.1.0/24', dev: tun.name }, { netns: nsA });
    tun.onBatch((batch) => {
      const replies = batch.map(echoReply).filter((p): p is Packet => p !== undefined);
      if (replies.length) tun.write(replies);
    });
    const dump = spawn('ip', ['netns', 'exec', nsA, 'tcpdump', '-n', '-l', '-i', tun.name, '-c', '4', 'icmp'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(dump);
    let text = '';
    dump.stdout.setEncoding('utf8').on('data', (d: string) => {
      text += d;
    });
    let listening = false;
    dump.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (d.includes('listening')) listening = true;
    });
    for (let i = 0; i < 50 && !listening; i++) await new Promise((r) => setTimeout(r, 100));
    await runIn(nsA, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', '10.79.1.9']);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 3000);
      dump.on('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    expect(text).toMatch(/10\.79\.0\.1 > 10\.79\.1\.9: ICMP echo request/);
    expect(text).toMatch(/10\.79\.1\.9 > 10\.79\.0\.1: ICMP echo reply/);
    tun.close();
  });

  it('gives clear errors: bad name, missing namespace, no permission', async () => {
    expect(() => TunDevice.open({ name: 'this-name-is-far-too-long' })).toThrow(/^EINVAL: bad TUN name/);
    expect(() => TunDevice.open({ name: 'a/b' })).toThrow(/^EINVAL/);
    expect(() => TunDevice.open({ name: 'x', netns: `${prefix}missing` })).toThrow(
      /^ENOENT: entering the network namespace failed/,
    );
    // Same call without CAP_NET_ADMIN, which TUNSETIFF needs.
    const script = `import('${join(process.cwd(), 'dataplane/tun-device.ts')}').then((m) => {
      try { m.TunDevice.open({ name: '${prefix}u' }); console.log('opened'); }
      catch (e) { console.log(e.message); }
    })`;
    const out = await run(...withoutPrivileges([process.execPath, '--input-type=module', '-e', script]));
    // /dev/net/tun is 0666 on most hosts (then TUNSETIFF refuses), 0600 on some (then open does).
    expect(out.trim()).toMatch(/^(EPERM: TUNSETIFF|EACCES: open \/dev\/net\/tun) failed/);
  });

  it.each(['thread', 'loop', 'auto'] as const)(
    'attaches to an existing persistent TUN, survives a throwing handler, and reports the device being deleted (reader %s)',
    async (reader) => {
      const name = `${prefix}x${reader[0]}`;
      await run('ip', ['-n', nsB, 'tuntap', 'add', 'dev', name, 'mode', 'tun', 'vnet_hdr']);
      const tun = track(TunDevice.open({ name, netns: nsB, reader }));
      expect(tun.name).toBe(name);
      await configureInterface({ dev: name, address: '10.81.0.1/32', netns: nsB });
      await ensureRoute({ dst: '10.81.1.0/24', dev: name }, { netns: nsB });
      const errors: Error[] = [];
      tun.onError((e) => errors.push(e));
      let thrown = false;
      tun.onBatch((batch) => {
        const replies = batch.map(echoReply).filter((p): p is Packet => p !== undefined);
        if (replies.length && !thrown) {
          thrown = true;
          throw new Error('handler bug');
        }
        if (replies.length) tun.write(replies);
      });
      const out = await runIn(nsB, 'ping', ['-c', '3', '-i', '0.2', '-W', '1', '10.81.1.1']).catch(
        (e: Error) => e.message,
      );
      expect(out).toMatch(/3 packets transmitted, 2 received/);
      expect(tun.stats().handlerErrors).toBe(1);
      expect(errors.map((e) => e.message)).toEqual(['handler bug']);
      // A persistent TUN outlives our fd; deleting it under us ends the reader with an error.
      await run('ip', ['-n', nsB, 'link', 'del', name]);
      for (let i = 0; i < 30 && errors.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      expect(errors[1]?.message).toMatch(/reading TUN .* stopped/);
      tun.close();
    },
  );

  it('closes twice safely and leaks no fd or thread over 100 open/close cycles (every reader)', () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const threads = () => readdirSync('/proc/self/task').length;
    const warm = TunDevice.open({ name: `${prefix}w`, netns: nsA });
    warm.onBatch(() => {});
    warm.close();
    warm.close();
    expect(() => warm.write([{ vnet: new Uint8Array(10), data: new Uint8Array(20) }])).toThrow(/^EBADF/);
    const fd0 = fds();
    const th0 = threads();
    const readers = ['thread', 'loop', 'auto'] as const;
    for (let i = 0; i < 100; i++) {
      const t = TunDevice.open({ name: `${prefix}l`, netns: nsA, offload: i % 2 === 0, reader: readers[i % 3] });
      t.onBatch(() => {});
      t.close();
      t.close();
    }
    expect(fds()).toBe(fd0);
    expect(threads()).toBe(th0);
  });
});
