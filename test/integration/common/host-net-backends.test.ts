// The two host networking backends are interchangeable: the same pod attachment done through
// iproute2 and through the netlink helper leaves the kernel in the same state (compared as
// `ip -j` prints it), and deleting it through either leaves nothing. A helper that dies in the
// middle of an operation has that operation redone with iproute2, and counted; a refusal by
// the kernel is an answer, not a helper failure, and is not redone.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BridgeSpec,
  createNetns,
  deleteNetns,
  type HostNet,
  ip,
  iproute2HostNet,
  NetlinkError,
  netlinkHostNet,
  type PodSpec,
  type VethSpec,
} from '../../../common/host-net/index.ts';
import { runPrefix } from '../../../common/netns.ts';
import { installClient } from '../cni/harness.ts';

const prefix = runPrefix('emhb');
const BRIDGE = 'embr0';
const HOST = 'emvtest0';
let dir: string;
let client: string;
const namespaces: string[] = [];

/** A node namespace with the bridge (done with iproute2 by both backends) and an empty pod namespace. */
async function nodeAndPod(tag: string): Promise<{ node: string; pod: string }> {
  const node = `${prefix}n${tag}`;
  const pod = `${prefix}p${tag}`;
  for (const ns of [node, pod]) {
    namespaces.push(ns);
    await createNetns(ns);
  }
  const bridge: BridgeSpec = {
    name: BRIDGE,
    mac: '0a:58:0a:61:00:01',
    mtu: 1400,
    addresses: [
      { address: '10.97.0.1', prefixLength: 24, family: 4 },
      { address: 'fd97::1', prefixLength: 64, family: 6 },
    ],
  };
  await iproute2HostNet({ netns: node }).ensureBridge(bridge);
  return { node, pod };
}

function attachment(podNs: string): { veth: VethSpec; pod: PodSpec } {
  const netns = `/var/run/netns/${podNs}`;
  return {
    veth: {
      host: HOST,
      hostMac: '0a:58:0a:61:00:fe',
      bridge: BRIDGE,
      podIfname: 'eth0',
      podMac: '0a:58:0a:61:00:02',
      netns,
      mtu: 1400,
    },
    pod: {
      netns,
      ifname: 'eth0',
      addresses: [
        { address: '10.97.0.2', prefixLength: 24, family: 4 },
        { address: 'fd97::2', prefixLength: 64, family: 6 },
      ],
      gateways: ['10.97.0.1', 'fd97::1'],
    },
  };
}

/** Fields that differ between two namespaces for reasons other than what was configured. */
const VOLATILE = new Set(['ifindex', 'link_index', 'link_netnsid', 'stats', 'stats64']);
/** The bridge's running timers (gc_timer, forward_delay_timer, ...) tick on their own. */
const isVolatile = (key: string) => VOLATILE.has(key) || key.endsWith('_timer');
function normalise(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalise);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([k]) => !isVolatile(k))
        .map(([k, v]) => [k, normalise(v)]),
    );
  }
  return value;
}

/** Everything the attachment touches, as `ip -j` lists it: node-side links, pod links, addresses, routes. */
async function kernelState(node: string, pod: string): Promise<Record<string, unknown>> {
  const show = async (ns: string, args: string[]) =>
    normalise(JSON.parse((await ip(['-j', ...args], { netns: ns })) || '[]'));
  return {
    nodeLinks: await show(node, ['-d', 'link', 'show']),
    nodeAddresses: await show(node, ['addr', 'show']),
    nodeRoutes: await show(node, ['route', 'show', 'table', 'all']),
    nodeRoutes6: await show(node, ['-6', 'route', 'show', 'table', 'all']),
    podLinks: await show(pod, ['-d', 'link', 'show']),
    podAddresses: await show(pod, ['addr', 'show']),
    podRoutes: await show(pod, ['route', 'show', 'table', 'all']),
    podRoutes6: await show(pod, ['-6', 'route', 'show', 'table', 'all']),
  };
}

/**
 * Compares the two namespaces' states until they agree: link-local addresses and carrier
 * settle a moment after the configuration calls return, in both namespaces alike.
 */
async function expectSameState(a: { node: string; pod: string }, b: { node: string; pod: string }): Promise<void> {
  let left: Record<string, unknown> = {};
  let right: Record<string, unknown> = {};
  for (let i = 0; i < 60; i++) {
    [left, right] = await Promise.all([kernelState(a.node, a.pod), kernelState(b.node, b.pod)]);
    if (JSON.stringify(left) === JSON.stringify(right)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  expect(right).toEqual(left);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), `${prefix}`));
  client = await installClient(join(dir, 'bin'));
}, 60_000);

afterAll(async () => {
  for (const ns of namespaces) await deleteNetns(ns);
  await rm(dir, { recursive: true, force: true });
});

describe('host networking backends', () => {
  it('iproute2 and the netlink helper leave the same kernel state, attaching and deleting', async () => {
    const viaIproute2 = await nodeAndPod('i');
    const viaNetlink = await nodeAndPod('n');
    const iproute2 = iproute2HostNet({ netns: viaIproute2.node });
    const netlink = netlinkHostNet({ binary: client, netns: viaNetlink.node });
    try {
      expect(netlink.backend).toBe('netlink');
      const a = attachment(viaIproute2.pod);
      const b = attachment(viaNetlink.pod);
      await iproute2.attachPod(a.veth, a.pod);
      await netlink.attachPod(b.veth, b.pod);
      // The attachment is really there (not two equally empty namespaces).
      expect(await netlink.vethPorts(BRIDGE)).toEqual([HOST]);
      expect((await netlink.readPodLink(b.pod.netns, 'eth0'))?.addresses).toEqual(
        expect.arrayContaining(['10.97.0.2/24', 'fd97::2/64']),
      );
      await expectSameState(viaIproute2, viaNetlink);

      expect(await iproute2.deleteLink(HOST)).toBe(true);
      expect(await netlink.deleteLink(HOST)).toBe(true);
      await expectSameState(viaIproute2, viaNetlink);
      expect(await iproute2.listLinks()).toEqual(['lo', BRIDGE]);
      // A second delete finds nothing, in both.
      expect(await iproute2.deleteLink(HOST)).toBe(false);
      expect(await netlink.deleteLink(HOST)).toBe(false);
      // All of it went through the helper: nothing fell back.
      expect(netlink.counters()).toEqual({ helperStarts: 1, helperFailures: 0, iproute2Fallbacks: 0 });
    } finally {
      netlink.close();
    }
  });

  it('an operation whose helper dies is redone with iproute2 and counted; a kernel refusal is not', async () => {
    const reference = await nodeAndPod('r');
    const failing = await nodeAndPod('f');
    // A "helper" that takes the request and dies without answering, as a crashed one does.
    const dying = join(dir, 'dying-helper');
    await writeFile(dying, '#!/bin/sh\nread request\nexit 3\n');
    await chmod(dying, 0o755);
    const net: HostNet = netlinkHostNet({ binary: dying, netns: failing.node });
    const working = netlinkHostNet({ binary: client, netns: reference.node });
    try {
      const b = attachment(failing.pod);
      await net.attachPod(b.veth, b.pod);
      expect(net.counters()).toEqual({ helperStarts: 1, helperFailures: 1, iproute2Fallbacks: 1 });
      // The fallback did the whole attachment: the same state as a working helper leaves.
      const a = attachment(reference.pod);
      await working.attachPod(a.veth, a.pod);
      await expectSameState(reference, failing);

      expect(await net.deleteLink(HOST)).toBe(true);
      expect(net.counters()).toEqual({ helperStarts: 2, helperFailures: 2, iproute2Fallbacks: 2 });
      expect(await net.linkExists(HOST)).toBe(false);

      // The kernel's "no such bridge" through a working helper is its answer: thrown, not redone.
      const orphan = attachment(reference.pod);
      const refused = working.attachPod({ ...orphan.veth, host: 'emvtest1', bridge: 'nosuchbr0' }, orphan.pod);
      await expect(refused).rejects.toBeInstanceOf(NetlinkError);
      expect(working.counters()).toEqual({ helperStarts: 1, helperFailures: 0, iproute2Fallbacks: 0 });
      expect(await working.linkExists('emvtest1')).toBe(false);
      expect(await working.deleteLink(HOST)).toBe(true);
    } finally {
      net.close();
      working.close();
    }
  });
});
