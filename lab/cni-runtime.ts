// Runs CNI plugins exactly as a container runtime (libcni) does: load the first conflist
// of the conf dir, execute each plugin's binary from the bin dir with the CNI_* environment
// and its network config on stdin (name, cniVersion and, when chained, prevResult
// injected), ADD in order and DEL in reverse with the cached result as prevResult, and keep
// the results in a cache like libcni's (`<cacheDir>/<containerId>.json`).
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execPlugin as runPlugin } from '../cni/exec-plugin.ts';
import { compareVersions, isSupportedVersion } from '../cni/spec.ts';

export class CniCallError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(plugin: string, command: string, code: number, msg: string, details = '') {
    super(`CNI ${command} via ${plugin} failed: code ${code}: ${msg}${details ? ` (${details})` : ''}`);
    this.name = 'CniCallError';
    this.code = code;
    this.details = details;
  }
}

export interface CniTarget {
  /** The namespace the runtime (and so the plugin process) runs in: the node's. */
  hostNetns: string;
  binDir: string;
  confDir: string;
  cacheDir: string;
  containerId: string;
  /** Path of the pod's network namespace, e.g. /var/run/netns/<name>. */
  netnsPath: string;
  ifName: string;
}

export interface CniResult {
  cniVersion: string;
  interfaces?: Array<{ name: string; mac?: string; sandbox?: string }>;
  ips?: Array<{ address: string; gateway?: string; interface?: number }>;
  routes?: Array<{ dst: string; gw?: string }>;
  [key: string]: unknown;
}

interface Conflist {
  cniVersion: string;
  /** Spec 1.1: every version the configuration supports; newer runtimes pick from it. */
  cniVersions?: string[];
  name: string;
  plugins: Array<Record<string, unknown> & { type: string }>;
}

interface CacheEntry {
  kind: 'cniCacheV1';
  containerId: string;
  ifName: string;
  networkName: string;
  netnsPath: string;
  config: Conflist;
  result: CniResult;
}

/** The conflist a runtime would load: the lexically first *.conflist in the conf dir. */
export async function loadConflist(confDir: string): Promise<Conflist> {
  const files = (await readdir(confDir).catch(() => [] as string[])).filter((f) => f.endsWith('.conflist')).sort();
  if (files.length === 0) throw new Error(`no *.conflist in ${confDir} (has the agent written it yet?)`);
  const path = join(confDir, files[0]!);
  const doc = JSON.parse(await readFile(path, 'utf8')) as Partial<Conflist>;
  if (typeof doc.name !== 'string' || typeof doc.cniVersion !== 'string' || !Array.isArray(doc.plugins)) {
    throw new Error(`${path}: not a network configuration list (needs name, cniVersion, plugins)`);
  }
  // As libcni 1.2+ does: the highest version of `cniVersions` this runtime speaks wins.
  const offered = Array.isArray(doc.cniVersions) ? doc.cniVersions.filter(isSupportedVersion) : [];
  const cniVersion = offered.reduce((best, v) => (compareVersions(v, best) > 0 ? v : best), doc.cniVersion);
  return { ...(doc as Conflist), cniVersion };
}

function execPlugin(
  target: CniTarget,
  command: 'ADD' | 'DEL' | 'CHECK',
  plugin: string,
  netconf: Record<string, unknown>,
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: target.containerId,
    CNI_NETNS: target.netnsPath,
    CNI_IFNAME: target.ifName,
    CNI_PATH: target.binDir,
  };
  return runPlugin(join(target.binDir, plugin), env, JSON.stringify(netconf), { netns: target.hostNetns, timeoutMs });
}

async function invoke(
  target: CniTarget,
  command: 'ADD' | 'DEL' | 'CHECK',
  conflist: Conflist,
  plugin: Conflist['plugins'][number],
  prevResult: CniResult | undefined,
  timeoutMs: number,
): Promise<CniResult | undefined> {
  const netconf: Record<string, unknown> = {
    ...plugin,
    cniVersion: conflist.cniVersion,
    name: conflist.name,
    ...(prevResult ? { prevResult } : {}),
  };
  const { code, stdout, stderr } = await execPlugin(target, command, plugin.type, netconf, timeoutMs);
  if (code !== 0) {
    let parsed: { code?: number; msg?: string; details?: string } = {};
    try {
      parsed = JSON.parse(stdout) as typeof parsed;
    } catch {
      // not a CNI error object: report what the process printed
    }
    throw new CniCallError(
      plugin.type,
      command,
      parsed.code ?? code,
      parsed.msg ?? (stderr.trim() || stdout.trim() || `exit ${code}`),
      parsed.details ?? '',
    );
  }
  if (command !== 'ADD') return undefined;
  try {
    return JSON.parse(stdout) as CniResult;
  } catch {
    throw new CniCallError(plugin.type, command, 999, `unparsable result: ${stdout.slice(0, 200)}`);
  }
}

function cachePath(target: CniTarget): string {
  return join(target.cacheDir, `${target.containerId}.json`);
}

/** ADD through the whole chain; the final result is cached and returned. */
export async function cniAdd(target: CniTarget, opts: { timeoutMs?: number } = {}): Promise<CniResult> {
  const conflist = await loadConflist(target.confDir);
  let result: CniResult | undefined;
  for (const plugin of conflist.plugins) {
    result = await invoke(target, 'ADD', conflist, plugin, result, opts.timeoutMs ?? 30_000);
  }
  if (!result) throw new Error(`${target.confDir}: the conflist has no plugins`);
  const entry: CacheEntry = {
    kind: 'cniCacheV1',
    containerId: target.containerId,
    ifName: target.ifName,
    networkName: conflist.name,
    netnsPath: target.netnsPath,
    config: conflist,
    result,
  };
  await mkdir(target.cacheDir, { recursive: true });
  const tmp = `${cachePath(target)}.tmp`;
  await writeFile(tmp, `${JSON.stringify(entry, null, 2)}\n`);
  await rename(tmp, cachePath(target));
  return result;
}

/** DEL through the chain in reverse with the cached result (the config used at ADD time), then drop the cache. */
export async function cniDel(target: CniTarget, opts: { timeoutMs?: number } = {}): Promise<void> {
  let conflist: Conflist;
  let prev: CniResult | undefined;
  try {
    const entry = JSON.parse(await readFile(cachePath(target), 'utf8')) as CacheEntry;
    conflist = entry.config;
    prev = entry.result;
  } catch {
    conflist = await loadConflist(target.confDir);
  }
  for (const plugin of [...conflist.plugins].reverse()) {
    await invoke(target, 'DEL', conflist, plugin, prev, opts.timeoutMs ?? 30_000);
  }
  await rm(cachePath(target), { force: true });
}

/** The pod's addresses (without prefix length) from a result. */
export function resultAddresses(result: CniResult): string[] {
  return (result.ips ?? []).map((ip) => ip.address.split('/')[0]!);
}
