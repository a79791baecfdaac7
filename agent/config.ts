// The agent's configuration: a YAML file (the DaemonSet's ConfigMap), then the environment
// (NODE_NAME from the downward API, EDGEMESH_*), then command-line flags, each layer
// overriding the one before. Validated with zod so an operator reads one line per mistake.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
// js-yaml, not yaml: client-node reads kubeconfigs with it, so the agent loads one YAML parser.
import { load as parseYaml } from 'js-yaml';
import { z } from 'zod';
import { parseCidr, parseIp } from '../common/cidr.ts';
import { ConfigError, parseConfig } from '../common/config.ts';
import { CONFLIST_NAME, DEFAULT_CONFLIST_VERSION } from './cni-files.ts';

const cidr = z.string().refine(
  (s) => {
    try {
      const c = parseCidr(s);
      // Only network addresses: "10.244.0.5/16" is almost always a typo.
      return c.prefixLength > 0 && Buffer.from(c.bytes).equals(parseIp(s.slice(0, s.indexOf('/'))));
    } catch {
      return false;
    }
  },
  { message: 'expected a CIDR with its network address, e.g. 10.244.0.0/16' },
);

const multiaddr = z.string().regex(/^\/(ip4|ip6|dns4|dns6|dns)\/[^/]+\/tcp\/\d+(\/.*)?$/, {
  message: 'expected a TCP multiaddr, e.g. /ip4/0.0.0.0/tcp/4001',
});

const ifname = z
  .string()
  .min(1)
  .max(15, { message: 'interface names have at most 15 characters' })
  .regex(/^[A-Za-z0-9_.-]+$/, { message: 'interface names use letters, digits, "_", "." and "-"' });

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[\w.-]+):\d{1,5}$/, {
  message: 'expected host:port, e.g. 127.0.0.1:9273',
});

/** The schema of the whole agent configuration, with its defaults. */
export const agentConfigSchema = z
  .object({
    nodeName: z
      .string({ error: 'required: set nodeName in the file or the NODE_NAME environment variable' })
      .min(1)
      .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, { message: 'expected a Kubernetes node name (DNS subdomain)' }),
    /** Absent: in-cluster credentials (service account). */
    kubeconfig: z.string().min(1).optional(),
    clusterCidrs: z
      .array(cidr, { error: 'required: the cluster pod CIDR(s), e.g. [10.244.0.0/16]' })
      .min(1)
      .max(2)
      .refine((list) => new Set(list.map((c) => (c.includes(':') ? 6 : 4))).size === list.length, {
        message: 'at most one IPv4 and one IPv6 CIDR',
      }),
    blockPrefixV4: z.number().int().min(8).max(30).default(24),
    blockPrefixV6: z.number().int().min(64).max(126).default(112),
    /** Absent: the Node's `edgemesh.io/site` label, else a site of its own (the node name). */
    site: z.string().min(1).optional(),
    /** Absent: the Node's InternalIP from its status. */
    nodeIp: z
      .string()
      .refine((s) => isIP(s) !== 0, { message: 'expected an IP address' })
      .optional(),
    /** Absent: the Node's `edgemesh.io/relay=true` label decides. */
    relay: z.boolean().optional(),
    overlay: z
      .object({
        listen: z.array(multiaddr).min(1).default(['/ip4/0.0.0.0/tcp/4001']),
        announce: z.array(multiaddr).default([]),
        /**
         * Absent: a random port drawn at first start and kept in the state directory. Each
         * node needs its own: behind one NAT, nodes sharing a port cannot all punch.
         */
        punchPort: z.number().int().min(1).max(65535).optional(),
        /**
         * Which carrier peer traffic takes: auto (UDP sessions where they answer, else the
         * libp2p stream tunnel), or pinned to udp or stream.
         */
        transport: z.enum(['auto', 'udp', 'stream']).default('auto'),
        /** The UDP data socket's port; absent: the punch port (one port per node for both). */
        udpPort: z.number().int().min(1).max(65535).optional(),
        /**
         * Relay nodes only: the UDP relay's port (forwards members' sealed datagrams). Absent:
         * a random port drawn at first start and kept in the state directory, like the punch port.
         */
        relayPort: z.number().int().min(1).max(65535).optional(),
      })
      .prefault({}),
    paths: z
      .object({
        stateDir: z.string().min(1).default('/var/lib/edgemesh'),
        runDir: z.string().min(1).default('/run/edgemesh'),
        cniBinDir: z.string().min(1).default('/opt/cni/bin'),
        cniConfDir: z.string().min(1).default('/etc/cni/net.d'),
      })
      .prefault({}),
    tun: z
      .object({
        name: ifname.default('edgemesh0'),
        /**
         * `auto`: the MTU of the interface that carries the node IP, less the UDP session's
         * overhead over an IPv6 underlay (80 bytes: 1420 on a 1500-byte network).
         */
        mtu: z.union([z.number().int().min(1280).max(65535), z.literal('auto')]).default('auto'),
        offload: z.boolean().default(true),
        /**
         * The agent yields the CPU after every this many packets it writes into the TUN (0:
         * never). A batch of datagrams opened at once lands in a pod's socket as one burst;
         * on a busy node the receiving pod may not run before its buffer overflows, and a
         * yield lets it. See docs/decisions.md, "UDP loss on the lab's underlay".
         */
        writeBurst: z.number().int().min(0).max(1024).default(8),
        /**
         * Where the TUN and the UDP data socket are read: `loop` (on the event loop),
         * `adaptive` (on the loop while idle, on reader threads under load), `thread`, or
         * `auto`: `loop` on nodes with at most two CPUs, `adaptive` elsewhere (agent/readers.ts).
         */
        readers: z.enum(['auto', 'loop', 'adaptive', 'thread']).default('auto'),
      })
      .prefault({}),
    bridge: z
      .object({
        name: ifname.default('edgemesh-br0'),
        mtu: z.number().int().min(1280).max(65535).default(1500),
      })
      .prefault({}),
    cni: z
      .object({
        /**
         * The conflist's cniVersion. 1.0.0 by default: runtimes on libcni < 1.2 (containerd
         * 1.6/1.7, podman 4) reject newer results; newer runtimes pick from `cniVersions`.
         */
        version: z.enum(['0.4.0', '1.0.0', '1.1.0']).default(DEFAULT_CONFLIST_VERSION),
      })
      .prefault({}),
    http: z.object({ listen: hostPort.default('127.0.0.1:9273') }).prefault({}),
    /** How often the pod routes are re-checked against the kernel (repairs hand-made changes). */
    resyncSeconds: z.number().min(1).max(3600).default(30),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    for (const [i, c] of cfg.clusterCidrs.entries()) {
      const len = Number(c.split('/')[1]);
      const block = c.includes(':') ? cfg.blockPrefixV6 : cfg.blockPrefixV4;
      if (block < len) {
        ctx.addIssue({
          code: 'custom',
          path: ['clusterCidrs', i],
          message: `node blocks (/${block}) must fit inside the cluster CIDR ${c}`,
        });
      }
    }
    if (cfg.tun.name === cfg.bridge.name) {
      ctx.addIssue({ code: 'custom', path: ['bridge', 'name'], message: 'must differ from tun.name' });
    }
  });

export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** Command-line overrides (commander's option names). */
export interface AgentFlags {
  config?: string;
  nodeName?: string;
  kubeconfig?: string;
  site?: string;
  nodeIp?: string;
  runDir?: string;
  stateDir?: string;
  httpListen?: string;
}

type Raw = Record<string, unknown>;

function section(raw: Raw, key: string): Raw {
  const value = raw[key];
  if (value === undefined || value === null) {
    const fresh: Raw = {};
    raw[key] = fresh;
    return fresh;
  }
  return value as Raw;
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function bool(name: string, value: string): boolean {
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw new ConfigError('agent environment', [`${name}: expected true or false, got "${value}"`]);
}

function int(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n))
    throw new ConfigError('agent environment', [`${name}: expected an integer, got "${value}"`]);
  return n;
}

/**
 * Environment overrides. NODE_NAME is what the DaemonSet's downward API sets; the others
 * let an operator change one field without editing the ConfigMap.
 */
function applyEnv(raw: Raw, env: NodeJS.ProcessEnv): void {
  const e = (k: string) => {
    const v = env[k];
    return v === undefined || v === '' ? undefined : v;
  };
  const set = (target: Raw, key: string, value: unknown) => {
    if (value !== undefined) target[key] = value;
  };
  set(raw, 'nodeName', e('EDGEMESH_NODE_NAME') ?? e('NODE_NAME'));
  set(raw, 'kubeconfig', e('EDGEMESH_KUBECONFIG'));
  const cidrs = e('EDGEMESH_CLUSTER_CIDRS');
  if (cidrs) raw.clusterCidrs = list(cidrs);
  set(raw, 'site', e('EDGEMESH_SITE'));
  set(raw, 'nodeIp', e('EDGEMESH_NODE_IP'));
  const relay = e('EDGEMESH_RELAY');
  if (relay) raw.relay = bool('EDGEMESH_RELAY', relay);
  const overlay = () => section(raw, 'overlay');
  const listen = e('EDGEMESH_LISTEN');
  if (listen) overlay().listen = list(listen);
  const announce = e('EDGEMESH_ANNOUNCE');
  if (announce) overlay().announce = list(announce);
  const punch = e('EDGEMESH_PUNCH_PORT');
  if (punch) overlay().punchPort = int('EDGEMESH_PUNCH_PORT', punch);
  const relayPort = e('EDGEMESH_RELAY_PORT');
  if (relayPort) overlay().relayPort = int('EDGEMESH_RELAY_PORT', relayPort);
  const transport = e('EDGEMESH_TRANSPORT');
  if (transport) overlay().transport = transport;
  const paths = () => section(raw, 'paths');
  for (const [key, name] of [
    ['stateDir', 'EDGEMESH_STATE_DIR'],
    ['runDir', 'EDGEMESH_RUN_DIR'],
    ['cniBinDir', 'EDGEMESH_CNI_BIN_DIR'],
    ['cniConfDir', 'EDGEMESH_CNI_CONF_DIR'],
  ] as const) {
    const v = e(name);
    if (v) paths()[key] = v;
  }
  const mtu = e('EDGEMESH_TUN_MTU');
  if (mtu) section(raw, 'tun').mtu = mtu === 'auto' ? 'auto' : int('EDGEMESH_TUN_MTU', mtu);
  const readers = e('EDGEMESH_TUN_READERS');
  if (readers) section(raw, 'tun').readers = readers;
  const http = e('EDGEMESH_HTTP_LISTEN');
  if (http) section(raw, 'http').listen = http;
}

function applyFlags(raw: Raw, flags: AgentFlags): void {
  if (flags.nodeName) raw.nodeName = flags.nodeName;
  if (flags.kubeconfig) raw.kubeconfig = flags.kubeconfig;
  if (flags.site) raw.site = flags.site;
  if (flags.nodeIp) raw.nodeIp = flags.nodeIp;
  if (flags.runDir) section(raw, 'paths').runDir = flags.runDir;
  if (flags.stateDir) section(raw, 'paths').stateDir = flags.stateDir;
  if (flags.httpListen) section(raw, 'http').listen = flags.httpListen;
}

/** Parses YAML text into a plain object, or a ConfigError naming the file and line. */
export function parseConfigYaml(text: string, source: string): Raw {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(source, [`not valid YAML: ${(err as Error).message.split('\n')[0]}`]);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(source, ['expected a YAML mapping']);
  return doc as Raw;
}

/** Loads the configuration from file + environment + flags and validates it. */
export function loadAgentConfig(flags: AgentFlags = {}, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const file = flags.config ?? env.EDGEMESH_CONFIG;
  let raw: Raw = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`agent config ${file}`, [`cannot read: ${(err as Error).message}`]);
    }
    raw = parseConfigYaml(text, `agent config ${file}`);
  }
  applyEnv(raw, env);
  applyFlags(raw, flags);
  return parseConfig(agentConfigSchema, raw, file ? `agent config ${file}` : 'agent config');
}

/** Where the agent keeps each of its files, derived from `paths`. */
export function agentFiles(cfg: AgentConfig) {
  const { stateDir, runDir, cniBinDir, cniConfDir } = cfg.paths;
  return {
    nodeKey: `${stateDir}/node.key`,
    punchPort: `${stateDir}/punch-port`,
    relayPort: `${stateDir}/relay-port`,
    leaseDir: `${stateDir}/leases`,
    cniSocket: `${runDir}/cni.sock`,
    controlSocket: `${runDir}/agent.sock`,
    conflist: `${cniConfDir}/${CONFLIST_NAME}`,
    cniClient: `${cniBinDir}/edgemesh`,
    subnetInfo: `${runDir}/subnet.json`,
  };
}
