import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { agentFiles, loadAgentConfig } from '../../../agent/config.ts';
import { ConfigError } from '../../../common/config.ts';

const dirs: string[] = [];
function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'em-agent-cfg-'));
  dirs.push(dir);
  const path = join(dir, 'agent.yaml');
  writeFileSync(path, text);
  return path;
}

afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error('expected a ConfigError');
}

const full = `
nodeName: edge-a-1
kubeconfig: /tmp/kubeconfig
clusterCidrs: [10.244.0.0/16, "fd00:10:244::/56"]
blockPrefixV4: 26
blockPrefixV6: 120
site: edge-a
nodeIp: 192.168.10.11
relay: false
overlay:
  listen: [/ip4/0.0.0.0/tcp/4001]
  announce: [/ip4/203.0.113.10/tcp/4001]
  punchPort: 4002
paths:
  stateDir: /var/lib/em
  runDir: /run/em
  cniBinDir: /opt/cni/bin
  cniConfDir: /etc/cni/net.d
tun: { name: edgemesh0, mtu: 1400, offload: true }
bridge: { name: edgemesh-br0, mtu: 1500 }
http: { listen: 127.0.0.1:9273 }
`;

describe('agent config', () => {
  it('reads the full contract from YAML', () => {
    const cfg = loadAgentConfig({ config: configFile(full) }, {});
    expect(cfg).toMatchObject({
      nodeName: 'edge-a-1',
      clusterCidrs: ['10.244.0.0/16', 'fd00:10:244::/56'],
      blockPrefixV4: 26,
      site: 'edge-a',
      nodeIp: '192.168.10.11',
      relay: false,
      overlay: { announce: ['/ip4/203.0.113.10/tcp/4001'], punchPort: 4002 },
      tun: { name: 'edgemesh0', mtu: 1400, offload: true },
    });
    expect(agentFiles(cfg)).toMatchObject({
      cniSocket: '/run/em/cni.sock',
      controlSocket: '/run/em/agent.sock',
      conflist: '/etc/cni/net.d/10-edgemesh.conflist',
      cniClient: '/opt/cni/bin/edgemesh',
    });
  });

  it("takes the TUN and UDP readers' setting and refuses an unknown one", () => {
    const base = 'nodeName: n1\nclusterCidrs: [10.244.0.0/16]\n';
    expect(loadAgentConfig({ config: configFile(`${base}tun: { readers: adaptive }\n`) }, {}).tun.readers).toBe(
      'adaptive',
    );
    expect(loadAgentConfig({ config: configFile(base) }, { EDGEMESH_TUN_READERS: 'thread' }).tun.readers).toBe(
      'thread',
    );
    expect(issuesOf(() => loadAgentConfig({ config: configFile(`${base}tun: { readers: fast }\n`) }, {}))[0]).toMatch(
      /tun\.readers/,
    );
  });

  it('fills defaults so a DaemonSet needs only NODE_NAME and the cluster CIDR', () => {
    const cfg = loadAgentConfig({}, { NODE_NAME: 'n1', EDGEMESH_CLUSTER_CIDRS: '10.244.0.0/16' });
    expect(cfg.nodeName).toBe('n1');
    expect(cfg.kubeconfig).toBeUndefined();
    expect(cfg.site).toBeUndefined();
    expect(cfg.blockPrefixV4).toBe(24);
    expect(cfg.tun.readers).toBe('auto');
    expect(cfg.paths.runDir).toBe('/run/edgemesh');
    expect(cfg.overlay.listen).toEqual(['/ip4/0.0.0.0/tcp/4001']);
    expect(cfg.http.listen).toBe('127.0.0.1:9273');
    expect(cfg.cni.version).toBe('1.0.0');
    expect(cfg.tun.mtu).toBe('auto');
    // No cluster-wide punch port: each node draws its own (overlay/punch-port.ts).
    expect(cfg.overlay.punchPort).toBeUndefined();
    expect(cfg.overlay.transport).toBe('auto');
  });

  it('pins the transport from the file or the environment, and refuses unknown ones', () => {
    const base = { NODE_NAME: 'n1', EDGEMESH_CLUSTER_CIDRS: '10.244.0.0/16' };
    expect(loadAgentConfig({}, { ...base, EDGEMESH_TRANSPORT: 'stream' }).overlay.transport).toBe('stream');
    const path = configFile('overlay:\n  transport: udp\n');
    expect(loadAgentConfig({ config: path }, base).overlay.transport).toBe('udp');
    expect(issuesOf(() => loadAgentConfig({}, { ...base, EDGEMESH_TRANSPORT: 'quic' })).join('\n')).toMatch(
      /overlay\.transport/,
    );
  });

  it('takes the UDP relay port from the file or the environment (1-65535), absent by default', () => {
    const base = { NODE_NAME: 'n1', EDGEMESH_CLUSTER_CIDRS: '10.244.0.0/16' };
    expect(loadAgentConfig({}, base).overlay.relayPort).toBeUndefined();
    expect(loadAgentConfig({}, { ...base, EDGEMESH_RELAY_PORT: '25311' }).overlay.relayPort).toBe(25311);
    expect(loadAgentConfig({ config: configFile('overlay:\n  relayPort: 4003\n') }, base).overlay.relayPort).toBe(4003);
    expect(
      issuesOf(() => loadAgentConfig({ config: configFile('overlay:\n  relayPort: 70000\n') }, base)).join('\n'),
    ).toMatch(/overlay\.relayPort/);
  });

  it('lets the environment override the file and flags override both', () => {
    const path = configFile(full);
    const env = { NODE_NAME: 'from-env', EDGEMESH_SITE: 'env-site', EDGEMESH_RELAY: 'true', EDGEMESH_TUN_MTU: '1300' };
    const cfg = loadAgentConfig({ config: path, site: 'flag-site', runDir: '/tmp/r' }, env);
    expect(cfg.nodeName).toBe('from-env');
    expect(cfg.site).toBe('flag-site');
    expect(cfg.relay).toBe(true);
    expect(cfg.tun.mtu).toBe(1300);
    expect(cfg.paths.runDir).toBe('/tmp/r');
    expect(cfg.paths.stateDir).toBe('/var/lib/em');
  });

  it('names every bad field on its own line', () => {
    const path = configFile(`
clusterCidrs: [10.244.0.5/16, 10.0/16]
nodeIp: not-an-ip
tun: { name: a-very-long-interface-name, mtu: 100 }
overlay: { listen: [tcp://0.0.0.0:4001] }
bogus: 1
`);
    const issues = issuesOf(() => loadAgentConfig({ config: path }, {}));
    const text = issues.join('\n');
    expect(text).toMatch(/^nodeName: required/m);
    expect(text).toMatch(/^clusterCidrs\[0\]: expected a CIDR/m);
    expect(text).toMatch(/^clusterCidrs\[1\]: expected a CIDR/m); // ipaddr.js alone reads "10.0" as 10.0.0.0
    expect(text).toMatch(/^nodeIp: expected an IP address/m);
    expect(text).toMatch(/^tun\.name: interface names have at most 15/m);
    expect(text).toMatch(/^tun\.mtu: /m);
    expect(text).toMatch(/^overlay\.listen\[0\]: expected a TCP multiaddr/m);
    expect(text).toMatch(/bogus/);
  });

  it('rejects node blocks larger than the cluster CIDR and two CIDRs of one family', () => {
    expect(
      issuesOf(() => loadAgentConfig({}, { NODE_NAME: 'n', EDGEMESH_CLUSTER_CIDRS: '10.0.0.0/26' })).join(),
    ).toMatch(/node blocks \(\/24\) must fit inside/);
    const both = issuesOf(() =>
      loadAgentConfig({}, { NODE_NAME: 'n', EDGEMESH_CLUSTER_CIDRS: '10.0.0.0/16,10.1.0.0/16' }),
    );
    expect(both.join()).toMatch(/at most one IPv4 and one IPv6/);
  });

  it('reports unreadable files, bad YAML and bad environment values clearly', () => {
    expect(issuesOf(() => loadAgentConfig({ config: '/nonexistent/agent.yaml' }, {}))[0]).toMatch(/cannot read/);
    expect(issuesOf(() => loadAgentConfig({ config: configFile('nodeName: [unclosed') }, {}))[0]).toMatch(
      /not valid YAML/,
    );
    expect(issuesOf(() => loadAgentConfig({ config: configFile('- a\n- b\n') }, {}))[0]).toMatch(/YAML mapping/);
    expect(issuesOf(() => loadAgentConfig({}, { EDGEMESH_RELAY: 'maybe' }))[0]).toMatch(
      /EDGEMESH_RELAY: expected true/,
    );
  });
});
