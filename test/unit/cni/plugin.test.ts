// The plugin's answers that need no privileges: VERSION, validation errors, and the
// not-ready paths (no node block yet), with a real LeaseStore in a temporary directory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CniPlugin } from '../../../cni/plugin.ts';
import { LeaseStore } from '../../../ipam/lease-store.ts';

const block = { family: 4 as const, cidr: '10.244.9.0/24', gateway: '10.244.9.1' };

describe('CniPlugin.handle without privileges', () => {
  let dir: string;
  let leases: LeaseStore;
  const ops: [string, boolean][] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cni-unit-'));
    leases = await LeaseStore.open({ dir, blocks: [block] });
    ops.length = 0;
  });
  afterEach(async () => {
    await leases.close();
    await rm(dir, { recursive: true, force: true });
  });

  const plugin = (blocks = [block]) =>
    new CniPlugin({ leases, blocks, clusterCidrs: [], onOperation: (op, _s, ok) => ops.push([op, ok]) });
  const conf = (v: string, extra = {}) => JSON.stringify({ cniVersion: v, name: 'n', type: 'edgemesh', ...extra });

  it('answers VERSION in the requested version', async () => {
    const r = await plugin().handle({ env: { CNI_COMMAND: 'VERSION' }, stdin: conf('0.4.0') });
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      cniVersion: '0.4.0',
      supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'],
    });
    expect(ops).toEqual([['VERSION', true]]);
  });

  it('ADD answers 11 and STATUS 50 while the agent holds no block', async () => {
    const p = plugin([]);
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/var/run/netns/none', CNI_IFNAME: 'eth0' };
    const add = await p.handle({ env, stdin: conf('1.0.0') });
    expect(add.exitCode).toBe(1);
    expect(JSON.parse(add.stdout)).toMatchObject({ cniVersion: '1.0.0', code: 11 });
    const status = await p.handle({ env: { CNI_COMMAND: 'STATUS' }, stdin: conf('1.1.0') });
    expect(JSON.parse(status.stdout)).toMatchObject({ code: 50 });
    expect(ops).toEqual([
      ['ADD', false],
      ['STATUS', false],
    ]);
    expect(leases.list()).toEqual([]);
  });

  it('never throws, whatever the request looks like', async () => {
    const p = plugin();
    for (const req of [
      { env: {}, stdin: '' },
      { env: { CNI_COMMAND: 'ADD' }, stdin: 'null' },
      { env: null as unknown as Record<string, string>, stdin: 42 as unknown as string },
    ]) {
      const r = await p.handle(req);
      expect(r.exitCode).toBe(1);
      expect(typeof JSON.parse(r.stdout).code).toBe('number');
    }
  });
});
