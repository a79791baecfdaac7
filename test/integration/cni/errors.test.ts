// Bad input gets the spec's error codes as JSON on stdout (never a stack trace), DEL is
// forgiving, STATUS and GC follow spec 1.1 — all through the real C client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { deleteNetns } from '../../../common/netns.ts';
import { type Attachment, type CniNode, cniEnv, execPlugin, links, nsName, ping, startCniNode } from './harness.ts';

function expectError(r: { code: number; stdout: string; stderr: string }, code: number, msg?: RegExp) {
  expect(r.code, r.stdout).toBe(1);
  const json = JSON.parse(r.stdout) as { code: number; msg: string; cniVersion: string };
  expect(json.code, r.stdout).toBe(code);
  expect(typeof json.msg).toBe('string');
  if (msg) expect(json.msg).toMatch(msg);
  expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  return json;
}

describe('CNI errors, DEL edge cases, STATUS, GC', () => {
  let node: CniNode;
  let pod: Attachment;
  beforeAll(async () => {
    node = await startCniNode({ v6Block: null });
    pod = await node.pod('p');
  });
  afterAll(async () => {
    await node?.cleanup();
  });

  it('1: incompatible cniVersion', async () => {
    const j = expectError(await node.client('ADD', pod, node.conf('0.2.0')), 1, /0\.2\.0/);
    expect(j.cniVersion).toBe('1.1.0');
    expectError(await node.client('ADD', pod, node.conf('9.9.9')), 1);
    // STATUS and GC exist from 1.1.0, CHECK from 0.4.0.
    expectError(await node.client('STATUS', undefined, node.conf('1.0.0')), 1, /STATUS/);
    expectError(await node.client('GC', undefined, node.conf('1.0.0', { 'cni.dev/valid-attachments': [] })), 1);
    expectError(await node.client('CHECK', pod, node.conf('0.3.1', { prevResult: {} })), 1, /CHECK/);
  });

  it('2: unsupported field (a delegated ipam section)', async () => {
    const j = expectError(
      await node.client('ADD', pod, node.conf('1.0.0', { ipam: { type: 'host-local', subnet: '10.1.0.0/16' } })),
      2,
      /ipam/,
    );
    expect(j.msg).toContain('host-local');
  });

  it('3: unknown container on CHECK', async () => {
    expectError(
      await node.client('CHECK', { ...pod, containerId: 'never-added' }, node.conf('1.0.0', { prevResult: {} })),
      3,
      /never-added/,
    );
  });

  it('4: missing or invalid environment', async () => {
    const conf = node.conf('1.0.0');
    expectError(await execPlugin(node.clientPath, { CNI_PATH: '/usr/lib/cni' }, conf), 4, /CNI_COMMAND/);
    expectError(await execPlugin(node.clientPath, { ...cniEnv('ADD', pod), CNI_COMMAND: 'FROB' }, conf), 4, /FROB/);
    const { CNI_NETNS: _netns, ...noNetns } = cniEnv('ADD', pod);
    expectError(await execPlugin(node.clientPath, noNetns, conf), 4, /CNI_NETNS/);
    const { CNI_CONTAINERID: _id, ...noId } = cniEnv('DEL', pod);
    expectError(await execPlugin(node.clientPath, noId, conf), 4, /CNI_CONTAINERID/);
    expectError(await node.client('ADD', { ...pod, ifname: 'a-name-far-too-long' }, conf), 4, /CNI_IFNAME/);
    expectError(await node.client('ADD', { ...pod, containerId: 'bad id!' }, conf), 4, /CNI_CONTAINERID/);
  });

  it('5: I/O failure (the network namespace cannot be opened)', async () => {
    expectError(
      await node.client('ADD', { ...pod, netns: `/var/run/netns/${node.prefix}absent` }, node.conf('1.0.0')),
      5,
      /absent/,
    );
  });

  it('4: CNI_NETNS that is not a network namespace (no bare "RTNETLINK answers: Invalid argument")', async () => {
    const conf = node.conf('1.0.0');
    // A directory, a regular file, a device, and a namespace of another kind.
    for (const [netns, why] of [
      ['/tmp', /CNI_NETNS \/tmp is not a network namespace/],
      ['/proc/self/status', /not a network namespace/],
      ['/dev/null', /not a network namespace/],
      ['/proc/self/ns/mnt', /CNI_NETNS \/proc\/self\/ns\/mnt is a mnt namespace/],
    ] as const) {
      const j = expectError(await node.client('ADD', { ...pod, netns }, conf), 4, why);
      expect(j.msg).not.toMatch(/RTNETLINK|Invalid argument/);
    }
    // Whitespace or a newline in the path never reaches an ip -batch line.
    const r = await execPlugin(
      node.clientPath,
      { ...cniEnv('ADD', pod), CNI_NETNS: `${pod.netns}\nlink del lo` },
      conf,
    );
    expectError(r, 4, /CNI_NETNS/);
    // Nothing was half-built: no lease and no host veth were left for these attempts.
    expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toEqual([]);
  });

  it('6: undecodable JSON on stdin', async () => {
    // The socket must come from the environment here: the config itself is unreadable.
    const env = { ...cniEnv('ADD', pod), EDGEMESH_CNI_SOCKET: node.socket };
    expectError(await execPlugin(node.clientPath, env, '{"cniVersion": "1.0.0", '), 6);
    expectError(await execPlugin(node.clientPath, env, '[1,2,3]'), 6);
  });

  it('7: invalid network configuration', async () => {
    const env = { ...cniEnv('ADD', pod), EDGEMESH_CNI_SOCKET: node.socket };
    const noName = JSON.stringify({ cniVersion: '1.0.0', type: 'edgemesh' });
    expect(expectError(await execPlugin(node.clientPath, env, noName), 7).msg).toContain(
      'invalid network configuration',
    );
    expectError(await node.client('ADD', pod, node.conf('1.0.0', { name: 'bad name!' })), 7);
    expectError(await node.client('ADD', pod, node.conf('1.0.0', { dns: { nameservers: 'not-a-list' } })), 7);
  });

  it('11: agent not reachable (socket absent), and VERSION answered without the agent', async () => {
    const absent = `/tmp/${node.prefix}absent/cni.sock`;
    const r = await execPlugin(node.clientPath, cniEnv('ADD', pod), node.conf('0.4.0', { socket: absent }));
    const j = expectError(r, 11);
    expect(j.msg).toBe(`edgemesh agent not reachable at ${absent}: No such file or directory; try again later`);
    expect(j.cniVersion).toBe('0.4.0');
    const version = await execPlugin(node.clientPath, cniEnv('VERSION'), node.conf('0.4.0', { socket: absent }));
    expect(version.code).toBe(0);
    expect(version.json).toEqual({
      cniVersion: '0.4.0',
      supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'],
    });
  });

  it('the C client finds the top-level "socket" and carries UTF-8 and escapes both ways', async () => {
    // A decoy "socket" nested inside another field, with quotes and braces in strings before it.
    const stdin = `{"cniVersion":"1.1.0","x":{"socket":"/decoy.sock","a":[1,{"b":"\\"}]\\u007d"}]},"name":"n","type":"edgemesh","socket":${JSON.stringify(node.socket)}}`;
    const status = await node.client('STATUS', undefined, stdin);
    expect(status.code, status.stdout).toBe(0);
    const conf = node.conf('1.0.0', {
      dns: { search: ['grüße.example', 'tab\there', 'emoji-🚀', 'quote"back\\slash'] },
    });
    const add = await node.client('ADD', pod, conf);
    expect(add.code, add.stdout).toBe(0);
    expect((add.json as { dns: { search: string[] } }).dns.search).toEqual([
      'grüße.example',
      'tab\there',
      'emoji-🚀',
      'quote"back\\slash',
    ]);
    expect((await node.client('DEL', pod, conf)).code).toBe(0);
  });

  it('DEL succeeds after the netns was deleted, twice, with empty CNI_NETNS, and when ADD never ran', async () => {
    const gone = await node.pod('gone');
    expect((await node.client('ADD', gone, node.conf('1.0.0'))).code).toBe(0);
    await deleteNetns(nsName(gone.netns));
    const del1 = await node.client('DEL', gone, node.conf('1.0.0'));
    expect(del1.code, del1.stdout).toBe(0);
    expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toEqual([]);
    expect((await node.client('DEL', gone, node.conf('1.0.0'))).code).toBe(0);
    expect((await node.client('DEL', { ...gone, netns: '' }, node.conf('1.0.0'))).code).toBe(0);
    expect((await node.client('DEL', { ...pod, containerId: 'never-added-2' }, node.conf('1.0.0'))).code).toBe(0);
  });

  it('STATUS: ready while the bridge is up, error 50 when it is not; ADD recreates the bridge', async () => {
    const conf = node.conf('1.1.0');
    const ok = await node.client('STATUS', undefined, conf);
    expect(ok.code, ok.stdout).toBe(0);
    await run('ip', ['-n', node.node, 'link', 'del', 'edgemesh-br0']);
    expectError(await node.client('STATUS', undefined, conf), 50, /bridge/);
    const add = await node.client('ADD', pod, conf);
    expect(add.code, add.stdout).toBe(0);
    expect((await node.client('STATUS', undefined, conf)).code).toBe(0);
    expect(await ping(pod.netns, '10.244.7.1')).toBe(true);
    expect((await node.client('DEL', pod, conf)).code).toBe(0);
  });

  it('GC releases the leases and host interfaces of attachments not listed as valid', async () => {
    const conf = node.conf('1.1.0');
    const keep = await node.pod('keep');
    const drop = await node.pod('drop');
    const rk = await node.client('ADD', keep, conf);
    const rd = await node.client('ADD', drop, conf);
    expect([rk.code, rd.code]).toEqual([0, 0]);
    expect((await links(node.node)).filter((l) => l.startsWith('emv'))).toHaveLength(2);
    // Interfaces this plugin did not make: one named like ours but not on our bridge, one
    // port of our bridge with another name, one veth named like ours elsewhere. GC used to
    // delete every "emv*" link of the host.
    const foreign = ['emv0123456789ab', 'emvtoolongname1', 'xport0'];
    await run('ip', ['-n', node.node, 'link', 'add', foreign[0]!, 'type', 'bridge']);
    await run('ip', ['-n', node.node, 'link', 'add', foreign[1]!, 'type', 'veth', 'peer', 'name', 'xpeer0']);
    await run('ip', ['-n', node.node, 'link', 'add', foreign[2]!, 'type', 'veth', 'peer', 'name', 'xpeer1']);
    await run('ip', ['-n', node.node, 'link', 'set', foreign[2]!, 'master', 'edgemesh-br0']);
    const gc = await node.client(
      'GC',
      undefined,
      node.conf('1.1.0', {
        'cni.dev/valid-attachments': [{ containerID: keep.containerId, ifname: 'eth0' }],
      }),
    );
    expect(gc.code, gc.stdout).toBe(0);
    const all = await links(node.node);
    expect(all).toEqual(expect.arrayContaining(foreign));
    for (const name of [foreign[0]!, foreign[1]!, foreign[2]!]) await run('ip', ['-n', node.node, 'link', 'del', name]);
    const left = (await links(node.node)).filter((l) => l.startsWith('emv'));
    expect(left).toEqual([(rk.json as { interfaces: { name: string }[] }).interfaces[1]!.name]);
    expect(await links(nsName(drop.netns))).toEqual(['lo']);
    expectError(await node.client('CHECK', drop, node.conf('1.1.0', { prevResult: rd.json })), 3);
    expect((await node.client('CHECK', keep, node.conf('1.1.0', { prevResult: rk.json }))).code).toBe(0);
    expect(await ping(keep.netns, '10.244.7.1')).toBe(true);
    expectError(await node.client('GC', undefined, conf), 7, /valid-attachments/);
    expect((await node.client('DEL', keep, conf)).code).toBe(0);
  });
});
