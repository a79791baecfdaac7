import { describe, expect, it } from 'vitest';
import { parseEnv, parseNetConf } from '../../../cni/config.ts';
import { CniError } from '../../../cni/spec.ts';

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof CniError) return err.code;
    throw err;
  }
  return undefined;
}

const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0' };
const conf = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'edgemesh', ...extra });

describe('CNI environment', () => {
  it('accepts a complete ADD environment', () => {
    expect(parseEnv(env)).toMatchObject({ command: 'ADD', containerId: 'abc', ifname: 'eth0' });
  });
  it('needs CNI_NETNS for ADD and CHECK but not for DEL', () => {
    const { CNI_NETNS: _n, ...rest } = env;
    expect(codeOf(() => parseEnv(rest))).toBe(4);
    expect(codeOf(() => parseEnv({ ...rest, CNI_COMMAND: 'CHECK' }))).toBe(4);
    expect(parseEnv({ ...rest, CNI_COMMAND: 'DEL' }).netns).toBe('');
  });
  it('rejects unknown commands, bad container IDs and interface names with 4', () => {
    expect(codeOf(() => parseEnv({}))).toBe(4);
    expect(codeOf(() => parseEnv({ ...env, CNI_COMMAND: 'add' }))).toBe(4);
    expect(codeOf(() => parseEnv({ ...env, CNI_CONTAINERID: 'a b' }))).toBe(4);
    for (const bad of ['', '..', 'a/b', 'x:y', 'sixteen-chars-xx', 'with space']) {
      expect(
        codeOf(() => parseEnv({ ...env, CNI_IFNAME: bad })),
        bad,
      ).toBe(4);
    }
    expect(codeOf(() => parseEnv({ ...env, CNI_NETNS: 'relative/path' }))).toBe(4);
  });
  it('refuses a CNI_NETNS that would change the ip -batch lines it is spliced into', () => {
    // A newline starts another iproute2 command; spaces add arguments; quotes, backslashes
    // and "#" are batch syntax. Every command checks it, DEL included.
    for (const bad of [
      '/var/run/netns/x\nlink del eth0',
      '/var/run/netns/x type veth',
      '/var/run/netns/x\tmtu',
      '/var/run/netns/x\u0000',
      '/var/run/netns/x\u007f',
      '/var/run/netns/x\u0085',
      '/var/run/netns/"x"',
      "/var/run/netns/x'",
      '/var/run/netns/x\\',
      '/var/run/netns/x#',
      `/${'a'.repeat(5000)}`,
    ]) {
      for (const cmd of ['ADD', 'CHECK', 'DEL']) {
        expect(
          codeOf(() => parseEnv({ ...env, CNI_COMMAND: cmd, CNI_NETNS: bad })),
          JSON.stringify(bad),
        ).toBe(4);
      }
    }
    expect(() => parseEnv({ ...env, CNI_NETNS: '/x\ny' })).toThrow(/CNI_NETNS "\/x\\ny"/);
    expect(parseEnv({ ...env, CNI_NETNS: '/proc/1234/ns/net' }).netns).toBe('/proc/1234/ns/net');
    expect(parseEnv({ ...env, CNI_NETNS: '/var/run/netns/cni-1b2c_3.d-e' }).netns).toBe(
      '/var/run/netns/cni-1b2c_3.d-e',
    );
  });
  it('STATUS, GC and VERSION need no attachment', () => {
    for (const c of ['STATUS', 'GC', 'VERSION']) expect(parseEnv({ CNI_COMMAND: c }).command).toBe(c);
  });
});

describe('CNI network configuration', () => {
  it('maps bad input to the spec codes', () => {
    expect(codeOf(() => parseNetConf('{', 'ADD'))).toBe(6);
    expect(codeOf(() => parseNetConf('"a string"', 'ADD'))).toBe(6);
    expect(codeOf(() => parseNetConf(conf({ cniVersion: '0.2.0' }), 'ADD'))).toBe(1);
    expect(codeOf(() => parseNetConf(conf({ name: undefined }), 'ADD'))).toBe(7);
    expect(codeOf(() => parseNetConf(conf({ cniVersion: undefined }), 'ADD'))).toBe(7);
    expect(codeOf(() => parseNetConf(conf({ ipam: { type: 'host-local' } }), 'ADD'))).toBe(2);
    expect(codeOf(() => parseNetConf(conf({ cniVersion: '0.3.1' }), 'CHECK'))).toBe(1);
    expect(codeOf(() => parseNetConf(conf({ cniVersion: '1.0.0' }), 'STATUS'))).toBe(1);
    expect(codeOf(() => parseNetConf(conf({ cniVersion: '1.0.0' }), 'GC'))).toBe(1);
  });
  it('ignores fields meant for other plugins and keeps ours', () => {
    const parsed = parseNetConf(
      conf({
        cniVersion: '1.1.0',
        socket: '/run/x.sock',
        dns: { nameservers: ['10.96.0.10'] },
        capabilities: { portMappings: true },
        ipam: {},
        'cni.dev/valid-attachments': [{ containerID: 'c1', ifname: 'eth0' }],
      }),
      'GC',
    );
    expect(parsed).toMatchObject({
      cniVersion: '1.1.0',
      socket: '/run/x.sock',
      dns: { nameservers: ['10.96.0.10'] },
      validAttachments: [{ containerId: 'c1', ifname: 'eth0' }],
    });
  });
  it('VERSION accepts any config with a supported or missing version', () => {
    expect(parseNetConf('{}', 'VERSION').cniVersion).toBe('1.1.0');
    expect(codeOf(() => parseNetConf('{"cniVersion":"7.0.0"}', 'VERSION'))).toBe(1);
  });
});
