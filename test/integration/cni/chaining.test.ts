// edgemesh as the first plugin of a conflist followed by Debian's reference plugins
// portmap, bandwidth and tuning, driven the way libcni drives a chain: each plugin gets the
// previous one's result as prevResult; DEL runs in reverse; CHECK gets the final result.
// A hostPort on the node reaches a server inside the pod, and is gone after DEL.
import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../../common/exec.ts';
import {
  type Attachment,
  type CniNode,
  cniEnv,
  execPlugin,
  nsName,
  REFERENCE_PLUGINS,
  startCniNode,
} from './harness.ts';

const VERSION = '1.0.0';
const HOST_PORT = 18080;
const POD_PORT = 8080;

interface PluginConf {
  type: string;
  [k: string]: unknown;
}

/** What libcni does for one plugin of a list: inject name, cniVersion, prevResult, runtimeConfig. */
function pluginConf(conf: PluginConf, prevResult: unknown, runtimeConfig: Record<string, unknown>): string {
  const caps = (conf.capabilities ?? {}) as Record<string, boolean>;
  const rc = Object.fromEntries(Object.entries(runtimeConfig).filter(([k]) => caps[k]));
  return JSON.stringify({
    ...conf,
    name: 'edgemesh-chain',
    cniVersion: VERSION,
    ...(prevResult ? { prevResult } : {}),
    ...(Object.keys(rc).length ? { runtimeConfig: rc } : {}),
  });
}

function tcpGet(ns: string, host: string, port: number): Promise<string> {
  const script = `const s=require('net').connect(${port},'${host}');let d='';s.setTimeout(3000,()=>{process.exit(3)});s.on('data',x=>d+=x);s.on('end',()=>{process.stdout.write(d);process.exit(0)});s.on('error',e=>{console.error(e.message);process.exit(2)})`;
  return run('ip', ['netns', 'exec', ns, process.execPath, '-e', script]);
}

describe('chained with portmap, bandwidth and tuning', () => {
  let node: CniNode;
  let pod: Attachment;
  let server: ChildProcess | undefined;
  let outside: string;
  beforeAll(async () => {
    node = await startCniNode({ v6Block: null });
    pod = await node.pod('web');
    // An "outside" client on a link to the node (RFC 1918, only inside our namespaces).
    outside = await node.netns('out');
    await run('ip', [
      '-n',
      node.node,
      'link',
      'add',
      'to-out',
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      outside,
    ]);
    await run('ip', ['-n', node.node, 'addr', 'add', '192.168.77.1/24', 'dev', 'to-out']);
    await run('ip', ['-n', node.node, 'link', 'set', 'to-out', 'up']);
    await run('ip', ['-n', outside, 'addr', 'add', '192.168.77.2/24', 'dev', 'eth0']);
    await run('ip', ['-n', outside, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['netns', 'exec', node.node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  });
  afterAll(async () => {
    server?.kill('SIGKILL');
    await node?.cleanup();
  });

  it('passes prevResult along the chain; the hostPort reaches the pod until DEL', async () => {
    const plugins: PluginConf[] = [
      { type: 'edgemesh', socket: node.socket },
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
      { type: 'bandwidth', capabilities: { bandwidth: true } },
      { type: 'tuning', sysctl: { 'net.core.somaxconn': '777' } },
    ];
    const runtimeConfig = {
      portMappings: [{ hostPort: HOST_PORT, containerPort: POD_PORT, protocol: 'tcp' }],
      bandwidth: { ingressRate: 100_000_000, ingressBurst: 1_000_000 },
    };
    const exec = (type: string, command: string, stdin: string) =>
      type === 'edgemesh'
        ? node.client(command, pod, stdin)
        : execPlugin(`${REFERENCE_PLUGINS}/${type}`, cniEnv(command, pod), stdin, { netns: node.node });

    let result: Record<string, unknown> | undefined;
    const results: Record<string, unknown>[] = [];
    for (const p of plugins) {
      const r = await exec(p.type, 'ADD', pluginConf(p, result, runtimeConfig));
      expect(r.code, `${p.type} ADD: ${r.stdout}${r.stderr}`).toBe(0);
      result = r.json!;
      results.push(result);
    }
    // Our result survives the chain: the reference plugins passed it through unchanged.
    // (Go plugins add an empty "dns": {}, which is the same as none.)
    for (const key of ['cniVersion', 'interfaces', 'ips', 'routes']) expect(results[3]![key]).toEqual(results[0]![key]);
    expect(await run('ip', ['netns', 'exec', nsName(pod.netns), 'sysctl', '-n', 'net.core.somaxconn'])).toBe('777\n');
    const qdisc = await run('ip', ['netns', 'exec', node.node, 'tc', 'qdisc', 'show']);
    expect(qdisc).toMatch(/tbf/);

    // CHECK over the chain with the final result. Not portmap: Debian's version has the bug
    // containernetworking/plugins#819 (its CHECK looks for IPv6 rules it never created).
    for (const p of plugins.filter((x) => x.type !== 'portmap')) {
      const r = await exec(p.type, 'CHECK', pluginConf(p, result, runtimeConfig));
      expect(r.code, `${p.type} CHECK: ${r.stdout}${r.stderr}`).toBe(0);
    }

    // A server in the pod, reached from outside through the node's hostPort.
    const script = `require('net').createServer(s=>s.end('hello from the pod\\n')).listen(${POD_PORT},()=>console.log('listening'))`;
    server = spawn('ip', ['netns', 'exec', nsName(pod.netns), process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve) => server!.stdout!.once('data', () => resolve()));
    expect(await tcpGet(outside, '192.168.77.1', HOST_PORT)).toBe('hello from the pod\n');

    // DEL in reverse order, each with the cached result as prevResult (as libcni does).
    for (const p of [...plugins].reverse()) {
      const r = await exec(p.type, 'DEL', pluginConf(p, result, runtimeConfig));
      expect(r.code, `${p.type} DEL: ${r.stdout}${r.stderr}`).toBe(0);
    }
    const nat = await run('ip', ['netns', 'exec', node.node, 'iptables-save', '-t', 'nat']);
    expect(nat).not.toContain(pod.containerId);
    expect(nat).not.toContain(`--dport ${HOST_PORT}`);
    await expect(tcpGet(outside, '192.168.77.1', HOST_PORT)).rejects.toThrow();
  });
});
