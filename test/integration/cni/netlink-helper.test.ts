// The netlink helper is a separate process the plugin depends on for every ADD and DEL: when
// it dies it is restarted, when it cannot run at all the plugin does the work with iproute2,
// and both are counted. Through the real C client and CNI server in a node namespace.
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { type CniNode, links, ping, startCniNode } from './harness.ts';

/** The server's children whose command line is the helper's (`edgemesh netlink-helper`). */
async function helperPids(serverPid: number): Promise<number[]> {
  const children = (await readFile(`/proc/${serverPid}/task/${serverPid}/children`, 'utf8'))
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
  const helpers: number[] = [];
  for (const pid of children) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').includes('netlink-helper')) helpers.push(pid);
  }
  return helpers;
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const state = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!state || / [ZX] /.test(state)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`process ${pid} did not exit`);
}

describe('netlink helper failures', () => {
  let node: CniNode | undefined;
  afterEach(async () => {
    await node?.cleanup();
    node = undefined;
  });

  it('a helper killed between pods is restarted; the pods still work', async () => {
    node = await startCniNode({ v6Block: null });
    const conf = node.conf('1.0.0');
    const a = await node.pod('a');
    const addA = await node.client('ADD', a, conf);
    expect(addA.code, addA.stdout).toBe(0);
    const [helper, ...others] = await helperPids(node.serverPid()!);
    expect(helper, 'a running netlink helper').toBeDefined();
    expect(others).toEqual([]);
    process.kill(helper!, 'SIGKILL');
    await waitGone(helper!);

    const b = await node.pod('b');
    const addB = await node.client('ADD', b, conf);
    expect(addB.code, addB.stdout).toBe(0);
    const ipB = (addB.json as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    expect(await ping(a.netns, ipB)).toBe(true);
    const restarted = await helperPids(node.serverPid()!);
    expect(restarted).toHaveLength(1);
    expect(restarted[0]).not.toBe(helper);

    for (const p of [a, b]) expect((await node.client('DEL', p, conf)).code).toBe(0);
    expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toEqual([]);
    await node.stopServer();
    expect(await node.counters()).toEqual({ helperStarts: 2, helperFailures: 1, iproute2Fallbacks: 0 });
  });

  it('a helper that cannot run: ADD and DEL fall back to iproute2, counted', async () => {
    node = await startCniNode({ v6Block: null, netlinkHelper: '/nonexistent/edgemesh' });
    const conf = node.conf('1.0.0');
    const pods = [await node.pod('a'), await node.pod('b')];
    const ips: string[] = [];
    for (const p of pods) {
      const add = await node.client('ADD', p, conf);
      expect(add.code, add.stdout).toBe(0);
      ips.push((add.json as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!);
    }
    expect(await ping(pods[0]!.netns, ips[1]!)).toBe(true);
    for (const p of pods) expect((await node.client('DEL', p, conf)).code).toBe(0);
    expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toEqual([]);
    await node.stopServer();
    const counters = await node.counters();
    // One helper operation per ADD and per DEL: all four done by iproute2. The helper is
    // tried until it has failed three times in a row, then left alone for a while.
    expect(counters.iproute2Fallbacks).toBe(4);
    expect(counters.helperFailures).toBe(3);
    expect(counters.helperStarts).toBe(3);
  });
});
