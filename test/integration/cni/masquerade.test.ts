// Pod traffic leaving the cluster CIDRs is masqueraded to the node's address; traffic to a
// cluster CIDR (another node's pods) keeps the Pod IP. The rules are idempotent, follow
// the configured CIDRs, and removeMasquerade() leaves nothing. All inside our namespaces.
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import { type Attachment, type CniNode, nsName, ROOT, startCniNode } from './harness.ts';

const CLUSTER = ['10.244.0.0/15', 'fd00:10:244::/48'];

/** Runs ensureMasquerade/removeMasquerade inside the node namespace (never in the root one). */
async function masq(node: string, call: string): Promise<void> {
  const mod = join(ROOT, 'cni', 'masquerade.ts');
  await run('ip', [
    'netns',
    'exec',
    node,
    process.execPath,
    '--input-type=module',
    '-e',
    `const m = await import('${mod}'); await m.${call};`,
  ]);
}

async function natRules(node: string, tool = 'iptables'): Promise<string[]> {
  const out = await run('ip', ['netns', 'exec', node, tool, '-w', '-t', 'nat', '-S']);
  return out.split('\n').filter((l) => l.includes('EDGEMESH-MASQ'));
}

describe('masquerade of pod traffic leaving the cluster', () => {
  let node: CniNode;
  let pod: Attachment;
  let podIp = '';
  let listener: ChildProcess | undefined;
  const seen: string[] = [];
  beforeAll(async () => {
    node = await startCniNode({ clusterCidrs: CLUSTER, v6Block: null });
    pod = await node.pod('m');
    const add = await node.client('ADD', pod, node.conf('1.0.0'));
    expect(add.code, add.stdout).toBe(0);
    podIp = (add.json as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
    // "Outside": a TEST-NET internet host and a remote pod subnet, both behind one link.
    const out = await node.netns('x');
    await run('ip', ['-n', node.node, 'link', 'add', 'to-x', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', out]);
    await run('ip', ['-n', node.node, 'addr', 'add', '192.168.78.1/24', 'dev', 'to-x']);
    await run('ip', ['-n', node.node, 'link', 'set', 'to-x', 'up']);
    await run('ip', ['-n', node.node, 'route', 'add', '203.0.113.0/24', 'via', '192.168.78.2']);
    await run('ip', ['-n', node.node, 'route', 'add', '10.245.3.0/24', 'via', '192.168.78.2']);
    await run('ip', ['netns', 'exec', node.node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await run('ip', ['-n', out, 'addr', 'add', '192.168.78.2/24', 'dev', 'eth0']);
    await run('ip', ['-n', out, 'addr', 'add', '203.0.113.10/32', 'dev', 'eth0']);
    await run('ip', ['-n', out, 'addr', 'add', '10.245.3.2/32', 'dev', 'eth0']);
    await run('ip', ['-n', out, 'link', 'set', 'eth0', 'up']);
    const script = `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>console.log(m.toString()+' '+r.address));s.bind(9999,()=>console.log('ready'))`;
    listener = spawn('ip', ['netns', 'exec', out, process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const l = listener;
    await new Promise<void>((resolve) => {
      l.stdout!.on('data', (d: Buffer) => {
        for (const line of d.toString().split('\n').filter(Boolean)) {
          if (line === 'ready') resolve();
          else seen.push(line);
        }
      });
    });
  });
  afterAll(async () => {
    listener?.kill('SIGKILL');
    await node?.cleanup();
  });

  async function sendFromPod(dst: string, tag: string): Promise<string | undefined> {
    for (let attempt = 0; attempt < 20; attempt++) {
      await run('ip', ['netns', 'exec', nsName(pod.netns), 'bash', '-c', `printf ${tag} > /dev/udp/${dst}/9999`]);
      await new Promise((r) => setTimeout(r, 100));
      const line = seen.find((l) => l.startsWith(`${tag} `));
      if (line) return line.split(' ')[1];
    }
    return undefined;
  }

  it('masquerades to the internet, never towards cluster CIDRs', async () => {
    expect(await sendFromPod('203.0.113.10', 'internet'), seen.join(',')).toBe('192.168.78.1');
    expect(await sendFromPod('10.245.3.2', 'remotepod')).toBe(podIp);
  });

  it('is idempotent, follows the CIDR list, and is removed without a trace', async () => {
    const first = await natRules(node.node);
    expect(first.filter((l) => l.startsWith('-A POSTROUTING'))).toHaveLength(1);
    await masq(node.node, `ensureMasquerade(${JSON.stringify(CLUSTER)})`);
    await masq(node.node, `ensureMasquerade(${JSON.stringify(CLUSTER)})`);
    expect(await natRules(node.node)).toEqual(first);
    const v6 = await natRules(node.node, 'ip6tables');
    expect(v6).toContain('-A EDGEMESH-MASQ -d fd00:10:244::/48 -j RETURN');
    expect(v6.filter((l) => l.startsWith('-A POSTROUTING'))).toHaveLength(1);

    await masq(node.node, `ensureMasquerade(['10.244.0.0/16', '10.250.0.0/16'])`);
    const changed = await natRules(node.node);
    expect(changed.filter((l) => l.startsWith('-A POSTROUTING')).map((l) => /-s (\S+)/.exec(l)?.[1])).toEqual([
      '10.244.0.0/16',
      '10.250.0.0/16',
    ]);
    expect(changed).toContain('-A EDGEMESH-MASQ -d 10.250.0.0/16 -j RETURN');

    await masq(node.node, 'removeMasquerade()');
    expect(await natRules(node.node)).toEqual([]);
    expect(await natRules(node.node, 'ip6tables')).toEqual([]);
    await masq(node.node, 'removeMasquerade()'); // safe when nothing is installed
  });
});
