// Host-side helpers against real iproute2, inside a namespace this file creates.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import {
  applyRoutes,
  configureInterface,
  ensureRoute,
  iproute2HostNet,
  listRoutes,
  type RouteSpec,
  removeAddress,
  removeRoute,
} from '../../../common/host-net/index.ts';
import { createNetns, deleteNetns, runIn, runPrefix } from '../../../common/netns.ts';

const prefix = runPrefix('emhn');
const ns = `${prefix}n`;
const dev = `${prefix}t`;

beforeAll(async () => {
  await createNetns(ns);
  await run('ip', ['-n', ns, 'tuntap', 'add', 'dev', dev, 'mode', 'tun']);
});

afterAll(async () => {
  await deleteNetns(ns);
});

function manyRoutes(n: number, thirdOctetBase: number): RouteSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    dst: `10.${100 + Math.floor(i / 256) + thirdOctetBase}.${i % 256}.0/24`,
    dev,
    src: '10.99.0.1',
  }));
}

describe('host-net', () => {
  it('configures address, MTU and up idempotently and removes the address', async () => {
    for (let i = 0; i < 2; i++) {
      await configureInterface({ dev, address: ['10.99.0.1/32', 'fd99::1/128'], mtu: 1380, netns: ns });
    }
    const link = JSON.parse(await run('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', dev])) as {
      mtu: number;
      flags: string[];
      addr_info: { local: string }[];
    }[];
    expect(link[0]?.mtu).toBe(1380);
    expect(link[0]?.flags).toContain('UP');
    expect(link[0]?.addr_info.map((a) => a.local)).toEqual(expect.arrayContaining(['10.99.0.1', 'fd99::1']));
    await removeAddress({ dev, address: 'fd99::1/128', netns: ns });
    await removeAddress({ dev, address: 'fd99::1/128', netns: ns });
    const after = await runIn(ns, 'ip', ['addr', 'show', 'dev', dev]);
    expect(after).not.toMatch(/fd99::1/);
  });

  it('ensures, lists and removes single routes (v4 + v6, with src and table), idempotently', async () => {
    const v4: RouteSpec = { dst: '10.244.0.0/16', dev, src: '10.99.0.1' };
    const v6: RouteSpec = { dst: 'fd44::/64', dev };
    const inTable: RouteSpec = { dst: '10.245.0.0/16', dev, table: 100 };
    await configureInterface({ dev, address: 'fd99::1/128', netns: ns });
    for (let i = 0; i < 2; i++) {
      await ensureRoute(v4, { netns: ns });
      await ensureRoute(v6, { netns: ns });
      await ensureRoute(inTable, { netns: ns });
    }
    const routes = await listRoutes(dev, { netns: ns });
    expect(routes).toContainEqual(v4);
    expect(routes.map((r) => r.dst)).toContain('fd44::/64');
    expect(routes.map((r) => r.dst)).not.toContain('10.245.0.0/16');
    expect(await listRoutes(dev, { netns: ns, table: 100 })).toContainEqual(inTable);
    for (let i = 0; i < 2; i++) {
      await removeRoute(v4, { netns: ns });
      await removeRoute(v6, { netns: ns });
      await removeRoute(inTable, { netns: ns });
    }
    const left = (await listRoutes(dev, { netns: ns })).map((r) => r.dst);
    expect(left).not.toContain('10.244.0.0/16');
    expect(left).not.toContain('fd44::/64');
    await expect(ensureRoute({ dst: '10.1.0.0/16', dev: 'bad name; rm' }, { netns: ns })).rejects.toThrow(
      /bad interface name/,
    );
    await expect(ensureRoute({ dst: '10.1.0.0/16 via 1.2.3.4', dev }, { netns: ns })).rejects.toThrow(
      /bad route field/,
    );
    await expect(ensureRoute({ dst: '10.1.0.0/16', dev: 'nosuchdev0' }, { netns: ns })).rejects.toThrow(
      /Cannot find device/,
    );
  });

  it('applies 1,000 routes in one ip -batch (idempotent, removable), faster than one process per route', async () => {
    const batch = manyRoutes(1000, 0);
    let t0 = performance.now();
    await applyRoutes({ replace: batch }, { netns: ns });
    const batchMs = performance.now() - t0;
    await applyRoutes({ replace: batch }, { netns: ns });
    const listed = await listRoutes(dev, { netns: ns });
    expect(listed.filter((r) => r.dst.startsWith('10.1')).length).toBe(1000);
    await applyRoutes({ remove: batch }, { netns: ns });
    await applyRoutes({ remove: batch }, { netns: ns });
    expect((await listRoutes(dev, { netns: ns })).filter((r) => r.dst.startsWith('10.1')).length).toBe(0);

    // One process per route costs tens of ms each on a busy machine: time 100 and scale.
    const single = manyRoutes(100, 10);
    t0 = performance.now();
    for (const r of single) await ensureRoute(r, { netns: ns });
    const singleMs = ((performance.now() - t0) * batch.length) / single.length;
    await applyRoutes({ remove: single }, { netns: ns });
    console.log(
      `[host-net] 1000 routes: ip -batch ${batchMs.toFixed(0)} ms, one ip process per route ~${singleMs.toFixed(0)} ms ` +
        `(${(singleMs / batchMs).toFixed(1)}x)`,
    );
    expect(batchMs).toBeLessThan(singleMs);
  });

  it('applies every other line of a batch when the kernel refuses one, then reports the refusal', async () => {
    await configureInterface({ dev, address: '10.99.0.1/32', netns: ns });
    const before: RouteSpec = { dst: '10.77.1.0/24', dev, src: '10.99.0.1' };
    // A source address this namespace does not have: the kernel refuses this line alone.
    const refused: RouteSpec = { dst: '10.77.2.0/24', dev, src: '10.98.0.9' };
    const after: RouteSpec = { dst: '10.77.3.0/24', dev, src: '10.99.0.1' };
    await expect(applyRoutes({ replace: [before, refused, after] }, { netns: ns })).rejects.toThrow(/10\.77\.2\.0/);
    const dsts = (await listRoutes(dev, { netns: ns })).map((r) => r.dst);
    expect(dsts).toEqual(expect.arrayContaining(['10.77.1.0/24', '10.77.3.0/24']));
    expect(dsts).not.toContain('10.77.2.0/24');
    await applyRoutes({ remove: [before, after] }, { netns: ns });
  });

  it('keeps unreachable routes apart from device routes; route get names the device towards an address', async () => {
    const net = iproute2HostNet({ netns: ns });
    await net.configureInterface({ dev, address: '10.99.0.1/32' });
    await net.ensureRoute({ dst: '10.76.0.0/16', dev, src: '10.99.0.1' });
    for (const cidr of ['10.76.0.0/16', 'fd76::/48']) {
      for (let i = 0; i < 2; i++) await net.ensureUnreachableRoute(cidr, 4000);
    }
    const listed = await net.listTableRoutes();
    expect(listed).toContainEqual({ dst: '10.76.0.0/16', family: 4, type: 'unreachable', metric: 4000 });
    // IPv6 lists its unreachable routes on `lo`: the type, not the device, tells them apart.
    expect(listed).toContainEqual(
      expect.objectContaining({ dst: 'fd76::/48', family: 6, type: 'unreachable', dev: 'lo' }),
    );
    // The device route wins over the unreachable one (lower metric): traffic still leaves by the device.
    expect(listed).toContainEqual(expect.objectContaining({ dst: '10.76.0.0/16', dev, src: '10.99.0.1' }));
    expect(await net.routeTowards('10.76.1.2')).toEqual({ dev });
    expect(await net.removeUnreachableRoute('10.76.0.0/16', 4000)).toBe(true);
    expect(await net.removeUnreachableRoute('10.76.0.0/16', 4000)).toBe(false);
    expect(await net.removeUnreachableRoute('fd76::/48', 4000)).toBe(true);
    await net.removeRoute({ dst: '10.76.0.0/16', dev, src: '10.99.0.1' });
    expect(
      (await net.listTableRoutes()).filter((r) => r.dst.startsWith('10.76.') || r.dst.startsWith('fd76:')),
    ).toEqual([]);
    // No route at all: no device.
    expect(await net.routeTowards('203.0.113.9')).toBeUndefined();
  });
});
