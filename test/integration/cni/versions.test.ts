// ADD → CHECK → DEL for every supported cniVersion, through the real C client and the CNI
// server in a node namespace, with traffic: pods ping their gateway and each other (v4+v6).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUPPORTED_VERSIONS } from '../../../cni/spec.ts';
import { run } from '../../../common/exec.ts';
import { type CniNode, links, nsName, ping, startCniNode } from './harness.ts';

interface Result {
  cniVersion: string;
  interfaces: { name: string; mac: string; sandbox?: string; mtu?: number }[];
  ips: { address: string; gateway: string; interface: number; version?: string }[];
  routes: { dst: string; gw: string }[];
  dns?: { nameservers: string[] };
}

describe.each([
  { plumbing: 'netlink helper', netlinkHelper: true },
  { plumbing: 'iproute2', netlinkHelper: false },
])('CNI ADD → CHECK → DEL for every cniVersion (plumbing: $plumbing)', ({ netlinkHelper }) => {
  let node: CniNode;
  beforeAll(async () => {
    node = await startCniNode({ netlinkHelper });
  });
  afterAll(async () => {
    await node?.cleanup();
  });

  for (const version of SUPPORTED_VERSIONS) {
    it(`cniVersion ${version}: dual-stack pods reach the gateway and each other`, async () => {
      const conf = node.conf(version, { dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] } });
      const a = await node.pod(`a${version.replaceAll('.', '')}`);
      const b = await node.pod(`b${version.replaceAll('.', '')}`);
      const addA = await node.client('ADD', a, conf);
      expect(addA.stderr).toBe('');
      expect(addA.code, addA.stdout).toBe(0);
      const addB = await node.client('ADD', b, conf);
      expect(addB.code, addB.stdout).toBe(0);
      const ra = addA.json as unknown as Result;
      const rb = addB.json as unknown as Result;

      // Spec shape, converted to the requested version.
      expect(ra.cniVersion).toBe(version);
      expect(ra.interfaces.map((i) => i.name)).toEqual([
        'edgemesh-br0',
        expect.stringMatching(/^emv[0-9a-f]{12}$/),
        'eth0',
      ]);
      expect(ra.interfaces[2]!.sandbox).toBe(a.netns);
      expect(ra.ips).toHaveLength(2);
      for (const ip of ra.ips) {
        expect(ip.interface).toBe(2);
        if (version.startsWith('0.')) expect(ip.version).toBe(ip.address.includes(':') ? '6' : '4');
        else expect(ip.version).toBeUndefined();
      }
      if (version === '1.1.0') expect(ra.interfaces.every((i) => i.mtu === 1500)).toBe(true);
      else expect(ra.interfaces.some((i) => 'mtu' in i)).toBe(false);
      expect(ra.ips.map((i) => i.gateway).sort()).toEqual(['10.244.7.1', 'fd00:10:244:7::1']);
      expect(ra.routes).toEqual([
        { dst: '0.0.0.0/0', gw: '10.244.7.1' },
        { dst: '::/0', gw: 'fd00:10:244:7::1' },
      ]);
      expect(ra.dns?.nameservers).toEqual(['10.96.0.10']);

      // The pod interface matches the result.
      const shown = JSON.parse(await run('ip', ['-n', nsName(a.netns), '-j', 'addr', 'show', 'dev', 'eth0'])) as {
        address: string;
        addr_info: { local: string; prefixlen: number }[];
      }[];
      expect(shown[0]!.address).toBe(ra.interfaces[2]!.mac);
      const addrs = shown[0]!.addr_info.map((x) => `${x.local}/${x.prefixlen}`);
      for (const ip of ra.ips) expect(addrs).toContain(ip.address);

      // Traffic: gateway and the other pod, both families.
      const [bv4, bv6] = [rb.ips[0]!.address.split('/')[0]!, rb.ips[1]!.address.split('/')[0]!];
      expect(await ping(a.netns, '10.244.7.1')).toBe(true);
      expect(await ping(a.netns, 'fd00:10:244:7::1')).toBe(true);
      expect(await ping(a.netns, bv4)).toBe(true);
      expect(await ping(a.netns, bv6)).toBe(true);

      // CHECK: defined from 0.4.0 on; older versions refuse it with error 1 (like libcni's skel).
      const checkConf = node.conf(version, { prevResult: ra });
      const check = await node.client('CHECK', a, checkConf);
      if (version.startsWith('0.3')) {
        expect(check.code).toBe(1);
        expect(check.json).toMatchObject({ code: 1 });
      } else {
        expect(check.code, check.stdout).toBe(0);
        expect(check.stdout).toBe('');
        // Tamper with the pod: CHECK must notice and say what differs.
        await run('ip', ['-n', nsName(a.netns), 'addr', 'del', ra.ips[0]!.address, 'dev', 'eth0']);
        const bad = await node.client('CHECK', a, checkConf);
        expect(bad.code).toBe(1);
        expect(bad.json).toMatchObject({ code: 100 });
        expect(String(bad.json?.msg)).toContain(ra.ips[0]!.address);
      }

      // A repeated ADD gives the same addresses and leaks nothing.
      const again = await node.client('ADD', a, conf);
      expect(again.code, again.stdout).toBe(0);
      expect((again.json as unknown as Result).ips).toEqual(ra.ips);
      expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toHaveLength(2);
      expect(await ping(a.netns, bv4)).toBe(true);

      // DEL both: host veths gone, pods lose eth0.
      for (const p of [a, b]) {
        const del = await node.client('DEL', p, conf);
        expect(del.code, del.stdout).toBe(0);
        expect(del.stdout).toBe('');
      }
      expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toEqual([]);
      expect(await links(nsName(a.netns))).toEqual(['lo']);
      // The leases are gone: CHECK now reports an unknown container (error 3).
      if (!version.startsWith('0.3')) {
        expect((await node.client('CHECK', a, checkConf)).json).toMatchObject({ code: 3 });
      }
    });
  }
});
