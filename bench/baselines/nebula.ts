// nebula (Debian package) between the two namespaces of the bed: a CA, two host
// certificates from nebula-cert, static host map, no lighthouse, allow-all firewall.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { run, tryRun } from '../../common/exec.ts';
import { stopProcess } from '../lib/iperf.ts';
import type { Pair, Scenario } from './pair.ts';

export interface NebulaBed {
  scenario: Scenario;
  stop(): Promise<void>;
}

export async function startNebula(pair: Pair, mtu = 1420): Promise<NebulaBed> {
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-nebula-'));
  const tag = pair.a.slice(0, 6).replace(/[^a-z0-9]/g, '');
  const procs: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(procs.map(stopProcess));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await run('nebula-cert', [
      'ca',
      '-name',
      'edgemesh-bench',
      '-out-crt',
      join(dir, 'ca.crt'),
      '-out-key',
      join(dir, 'ca.key'),
    ]);
    const ends = [
      { name: 'a', netns: pair.a, underlay: pair.underlayA, overlay: '10.98.0.1', dev: `neb${tag}a` },
      { name: 'b', netns: pair.b, underlay: pair.underlayB, overlay: '10.98.0.2', dev: `neb${tag}b` },
    ];
    for (const [i, end] of ends.entries()) {
      const peer = ends[1 - i]!;
      await run('nebula-cert', [
        'sign',
        '-name',
        end.name,
        '-ip',
        `${end.overlay}/24`,
        '-ca-crt',
        join(dir, 'ca.crt'),
        '-ca-key',
        join(dir, 'ca.key'),
        '-out-crt',
        join(dir, `${end.name}.crt`),
        '-out-key',
        join(dir, `${end.name}.key`),
      ]);
      const config = {
        pki: { ca: join(dir, 'ca.crt'), cert: join(dir, `${end.name}.crt`), key: join(dir, `${end.name}.key`) },
        static_host_map: { [peer.overlay]: [`${peer.underlay}:4242`] },
        lighthouse: { am_lighthouse: false, hosts: [] },
        listen: { host: '0.0.0.0', port: 4242 },
        punchy: { punch: false },
        tun: { dev: end.dev, mtu },
        logging: { level: 'error' },
        firewall: {
          outbound: [{ port: 'any', proto: 'any', host: 'any' }],
          inbound: [{ port: 'any', proto: 'any', host: 'any' }],
        },
      };
      const file = join(dir, `${end.name}.yml`);
      await writeFile(file, stringify(config));
      procs.push(spawn('ip', ['netns', 'exec', end.netns, 'nebula', '-config', file], { stdio: 'ignore' }));
    }
    // Wait for the handshake: a ping that gets through.
    for (let i = 0; ; i++) {
      if (await tryRun('ip', ['netns', 'exec', pair.a, 'ping', '-c', '1', '-W', '1', '10.98.0.2'])) break;
      if (i > 20) throw new Error('nebula tunnel did not come up');
      await sleep(200);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    scenario: {
      name: 'nebula',
      clientNetns: pair.a,
      serverNetns: pair.b,
      target: '10.98.0.2',
      forwarderPids: () => procs.map((p) => p.pid ?? 0).filter(Boolean),
    },
    stop,
  };
}
