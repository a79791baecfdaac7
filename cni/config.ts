// Parsing and validating what the runtime hands the plugin: the CNI_* environment and the
// network configuration on stdin. Every problem becomes a CniError with the spec's code.
import { z } from 'zod';
import { formatIssues } from '../common/config.ts';
import {
  type CniCommand,
  CniError,
  type CniVersion,
  COMMANDS,
  compareVersions,
  ErrorCode,
  isSupportedVersion,
  SUPPORTED_VERSIONS,
} from './spec.ts';

export interface CniRequest {
  env: Record<string, string>;
  stdin: string;
}

export interface CniEnv {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifname: string;
  args: string;
  path: string;
}

// Spec: container ID "must only contain alphanumeric characters, underscore, hyphen and dot";
// interface name: at most 15 characters, not "." or "..", no "/", ":" or whitespace.
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const IFNAME = /^[^\s/:]{1,15}$/;
// CNI_NETNS is a path, and it ends up as an argument of `ip -batch` lines: whitespace, a
// control character (a newline starts a new command), a quote, a backslash or a "#" would
// change what those lines say. No real namespace path holds any of them.
const NETNS_FORBIDDEN = /[\s\p{Cc}"'\\#]/u;
const PATH_MAX = 4096;

/** Validates the environment for `command`; missing or invalid variables give error 4. */
export function parseEnv(env: Record<string, string>): CniEnv {
  const command = env.CNI_COMMAND ?? '';
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      command ? `unknown CNI_COMMAND "${command}"` : 'CNI_COMMAND is not set',
      `expected one of ${COMMANDS.join(', ')}`,
    );
  }
  const cmd = command as CniCommand;
  const parsed: CniEnv = {
    command: cmd,
    containerId: env.CNI_CONTAINERID ?? '',
    netns: env.CNI_NETNS ?? '',
    ifname: env.CNI_IFNAME ?? '',
    args: env.CNI_ARGS ?? '',
    path: env.CNI_PATH ?? '',
  };
  const needsAttachment = cmd === 'ADD' || cmd === 'DEL' || cmd === 'CHECK';
  if (!needsAttachment) return parsed;
  const missing: string[] = [];
  if (!parsed.containerId) missing.push('CNI_CONTAINERID');
  if (!parsed.ifname) missing.push('CNI_IFNAME');
  // DEL must work without a namespace (it may be gone already); ADD and CHECK need one.
  if (!parsed.netns && cmd !== 'DEL') missing.push('CNI_NETNS');
  if (missing.length > 0) {
    throw new CniError(ErrorCode.InvalidEnvironment, `required environment variables missing: ${missing.join(', ')}`);
  }
  if (!CONTAINER_ID.test(parsed.containerId)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `invalid CNI_CONTAINERID "${parsed.containerId}"`);
  }
  if (!IFNAME.test(parsed.ifname) || parsed.ifname === '.' || parsed.ifname === '..') {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `invalid CNI_IFNAME "${parsed.ifname}"`,
      'at most 15 characters, no "/", ":" or whitespace',
    );
  }
  if (parsed.netns && !parsed.netns.startsWith('/')) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `CNI_NETNS must be an absolute path, got ${JSON.stringify(parsed.netns)}`,
    );
  }
  if (NETNS_FORBIDDEN.test(parsed.netns) || parsed.netns.length > PATH_MAX) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `invalid CNI_NETNS ${JSON.stringify(parsed.netns.slice(0, 256))}`,
      'a network namespace path has no whitespace, control characters, quotes, backslashes or "#"',
    );
  }
  return parsed;
}

const dnsSchema = z.object({
  nameservers: z.array(z.string()).optional(),
  domain: z.string().optional(),
  search: z.array(z.string()).optional(),
  options: z.array(z.string()).optional(),
});
export type Dns = z.infer<typeof dnsSchema>;

const attachmentSchema = z.looseObject({ containerID: z.string().min(1), ifname: z.string().min(1) });

// Unknown keys pass: a conflist carries fields meant for the runtime and other plugins.
const netConfSchema = z.looseObject({
  cniVersion: z.string(),
  name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/, 'must start with a letter or digit, then [a-zA-Z0-9_.-]'),
  type: z.string().min(1),
  socket: z.string().min(1).optional(),
  dns: dnsSchema.optional(),
  ipam: z.record(z.string(), z.unknown()).optional(),
  prevResult: z.record(z.string(), z.unknown()).optional(),
  'cni.dev/valid-attachments': z.array(attachmentSchema).optional(),
});

export interface NetConf {
  cniVersion: CniVersion;
  name: string;
  type: string;
  socket?: string;
  dns?: Dns;
  prevResult?: Record<string, unknown>;
  validAttachments?: { containerId: string; ifname: string }[];
}

/** The cniVersion of a request, if stdin is JSON with one: used to shape error results too. */
export function peekVersion(stdin: string): string | undefined {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown })?.cniVersion;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Decodes (6), checks the version (1) and validates (7, 2) the network configuration. */
export function parseNetConf(stdin: string, command: CniCommand): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(
      ErrorCode.DecodingFailure,
      'network configuration on stdin is not valid JSON',
      (err as Error).message,
    );
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CniError(ErrorCode.DecodingFailure, 'network configuration on stdin must be a JSON object');
  }
  const version = (raw as { cniVersion?: unknown }).cniVersion;
  if (typeof version === 'string' && !isSupportedVersion(version)) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `incompatible CNI version ${version}`,
      `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  if (command === 'VERSION') {
    return { cniVersion: isSupportedVersion(version) ? version : '1.1.0', name: '', type: '' };
  }
  const result = netConfSchema.safeParse(raw);
  if (!result.success) {
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      'invalid network configuration',
      formatIssues(result.error).join('; '),
    );
  }
  const conf = result.data;
  const cniVersion = conf.cniVersion as CniVersion;
  // The agent owns address management: a delegated IPAM plugin cannot be honoured.
  if (conf.ipam && Object.keys(conf.ipam).length > 0) {
    throw new CniError(
      ErrorCode.UnsupportedField,
      `unsupported field "ipam": ${JSON.stringify(conf.ipam)}`,
      'edgemesh assigns pod IPs from the node block held by the agent; remove the ipam section',
    );
  }
  const minimum = command === 'CHECK' ? '0.4.0' : command === 'STATUS' || command === 'GC' ? '1.1.0' : undefined;
  if (minimum && compareVersions(cniVersion, minimum) < 0) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `config version ${cniVersion} does not allow ${command}`,
      `${command} needs cniVersion ${minimum} or later`,
    );
  }
  return {
    cniVersion,
    name: conf.name,
    type: conf.type,
    ...(conf.socket ? { socket: conf.socket } : {}),
    ...(conf.dns ? { dns: conf.dns } : {}),
    ...(conf.prevResult ? { prevResult: conf.prevResult } : {}),
    ...(conf['cni.dev/valid-attachments']
      ? {
          validAttachments: conf['cni.dev/valid-attachments'].map((a) => ({
            containerId: a.containerID,
            ifname: a.ifname,
          })),
        }
      : {}),
  };
}
