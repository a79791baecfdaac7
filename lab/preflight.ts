// What the lab needs from the machine, checked before anything is created, with errors
// that say what to install (Debian package names) instead of a failing `ip` halfway through.
import { access, constants, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export class PreflightError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`the lab cannot run on this machine:\n  - ${problems.join('\n  - ')}`);
    this.name = 'PreflightError';
    this.problems = problems;
  }
}

/** Tool → Debian package that ships it. */
export const REQUIRED_TOOLS: Record<string, string> = {
  ip: 'iproute2',
  iptables: 'iptables',
  'iptables-restore': 'iptables',
  ping: 'iputils-ping',
  kubectl: 'kubernetes-client',
};

const BUILT = {
  addon: fileURLToPath(new URL('../build/edgemesh_tun.node', import.meta.url)),
  client: fileURLToPath(new URL('../build/edgemesh', import.meta.url)),
};

async function exists(path: string, mode = constants.F_OK): Promise<boolean> {
  try {
    await access(path, mode);
    return true;
  } catch {
    return false;
  }
}

/** Finds an executable on PATH (plus the sbin directories a non-login root shell may lack). */
export async function which(tool: string, searchPath?: string): Promise<string | undefined> {
  const dirs =
    searchPath === undefined
      ? [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin']
      : searchPath.split(delimiter);
  for (const dir of dirs) {
    if (dir && (await exists(join(dir, tool), constants.X_OK))) return join(dir, tool);
  }
  return undefined;
}

/** Capability bits the lab needs: network namespaces and their links, TUN devices, iptables. */
const NEEDED_CAPABILITIES = { CAP_NET_ADMIN: 12n, CAP_SYS_ADMIN: 21n };

/** This process's effective capability set (from /proc), or undefined where /proc cannot tell. */
async function effectiveCapabilities(): Promise<bigint | undefined> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return hex === undefined ? undefined : BigInt(`0x${hex}`);
}

/** Why this process cannot do what root does here, or undefined when it can. */
async function privilegeProblem(): Promise<string | undefined> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return 'must run as root (network namespaces, TUN devices, iptables): use `sudo`';
  }
  // Root without its capabilities (a container without --privileged, a dropped bounding set)
  // would fail at the first `ip netns add`: say so now.
  const caps = await effectiveCapabilities();
  if (caps === undefined) return undefined;
  const missing = Object.entries(NEEDED_CAPABILITIES)
    .filter(([, bit]) => ((caps >> bit) & 1n) === 0n)
    .map(([name]) => name);
  if (missing.length === 0) return undefined;
  return `must run as root with its capabilities; this process lacks ${missing.join(' and ')} (a container without --privileged?)`;
}

/**
 * Throws a PreflightError listing every missing piece (not just the first). `searchPath`
 * replaces PATH (and the sbin fallbacks) for the tool lookup.
 */
export async function preflight(opts: { needTc?: boolean; searchPath?: string } = {}): Promise<void> {
  const problems: string[] = [];
  const privileges = await privilegeProblem();
  if (privileges) problems.push(privileges);
  const tools = { ...REQUIRED_TOOLS, ...(opts.needTc ? { tc: 'iproute2' } : {}) };
  const missing = await Promise.all(
    Object.entries(tools).map(async ([tool, pkg]) =>
      (await which(tool, opts.searchPath)) ? undefined : `${tool}: not found (apt install ${pkg})`,
    ),
  );
  problems.push(...missing.filter((m): m is string => m !== undefined));
  if (!(await exists('/dev/net/tun')))
    problems.push('/dev/net/tun is missing (kernel without TUN, or a container without the device)');
  if (!(await exists(BUILT.addon)))
    problems.push(`${BUILT.addon} is missing: run \`npm ci\` (or \`npm run build:native\`)`);
  if (!(await exists(BUILT.client)))
    problems.push(`${BUILT.client} is missing: run \`npm ci\` (or \`npm run build:native\`)`);
  if (problems.length > 0) throw new PreflightError(problems);
}
