// wireguard-go (Debian package) between the two namespaces of the bed, configured through
// its UAPI socket so the bench needs no wireguard-tools.
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createConnection } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from '../../common/exec.ts';
import { stopProcess } from '../lib/iperf.ts';
import type { Pair, Scenario } from './pair.ts';

function keyPair(): { privateHex: string; publicHex: string } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const d = privateKey.export({ format: 'jwk' }).d as string;
  const x = publicKey.export({ format: 'jwk' }).x as string;
  return {
    privateHex: Buffer.from(d, 'base64url').toString('hex'),
    publicHex: Buffer.from(x, 'base64url').toString('hex'),
  };
}

async function uapiSet(ifname: string, body: string): Promise<void> {
  const socketPath = `/var/run/wireguard/${ifname}.sock`;
  for (let attempt = 0; ; attempt++) {
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const sock = createConnection(socketPath);
        let data = '';
        sock.on('data', (d) => {
          data += d.toString();
          if (data.endsWith('\n\n')) sock.end();
        });
        sock.on('end', () => resolve(data));
        sock.on('error', reject);
        sock.write(`set=1\n${body}\n`);
      });
      if (!reply.includes('errno=0')) throw new Error(`wireguard-go UAPI ${ifname}: ${reply.trim()}`);
      return;
    } catch (err) {
      if (attempt > 50) throw err;
      await sleep(100);
    }
  }
}

export interface WireguardBed {
  scenario: Scenario;
  stop(): Promise<void>;
}

export async function startWireguardGo(pair: Pair, mtu = 1420): Promise<WireguardBed> {
  const tag = pair.a.slice(0, 6).replace(/[^a-z0-9]/g, '');
  const ends = [
    { netns: pair.a, ifname: `wg${tag}a`, underlay: pair.underlayA, overlay: '10.99.0.1', keys: keyPair() },
    { netns: pair.b, ifname: `wg${tag}b`, underlay: pair.underlayB, overlay: '10.99.0.2', keys: keyPair() },
  ] as const;
  const procs: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(procs.map(stopProcess));
  };
  try {
    for (const end of ends) {
      const proc = spawn('ip', ['netns', 'exec', end.netns, 'wireguard-go', '-f', end.ifname], {
        stdio: 'ignore',
        env: { ...process.env, LOG_LEVEL: 'error' },
      });
      procs.push(proc);
    }
    for (const [i, end] of ends.entries()) {
      const peer = ends[1 - i]!;
      await uapiSet(
        end.ifname,
        `private_key=${end.keys.privateHex}\nlisten_port=51820\nreplace_peers=true\n` +
          `public_key=${peer.keys.publicHex}\nendpoint=${peer.underlay}:51820\n` +
          `replace_allowed_ips=true\nallowed_ip=${peer.overlay}/32\n`,
      );
      await run('ip', ['-n', end.netns, 'addr', 'add', `${end.overlay}/24`, 'dev', end.ifname]);
      await run('ip', ['-n', end.netns, 'link', 'set', end.ifname, 'mtu', String(mtu), 'up']);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    scenario: {
      name: 'wireguard-go',
      clientNetns: pair.a,
      serverNetns: pair.b,
      target: '10.99.0.2',
      forwarderPids: () => procs.map((p) => p.pid ?? 0).filter(Boolean),
    },
    stop,
  };
}
