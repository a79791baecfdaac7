// Source NAT for pod traffic that leaves the cluster: packets from a pod (source in a
// cluster CIDR) to anything outside the cluster CIDRs get the node's address; pod↔pod
// traffic (destination in a cluster CIDR) keeps its Pod IP. Our own chain, EDGEMESH-MASQ,
// is rewritten whole on every call (iptables-restore --noflush flushes a chain it declares),
// so re-running never duplicates rules. Runs in the current network namespace.
import { run, tryRun } from '../common/exec.ts';

export const MASQ_CHAIN = 'EDGEMESH-MASQ';
const COMMENT = 'edgemesh-cni: masquerade pod traffic leaving the cluster';

type Tool = { restore: string; table: string };
const IPV4: Tool = { restore: 'iptables-restore', table: 'iptables' };
const IPV6: Tool = { restore: 'ip6tables-restore', table: 'ip6tables' };

function jumpRule(cidr: string): string[] {
  return ['-s', cidr, '-m', 'comment', '--comment', COMMENT, '-j', MASQ_CHAIN];
}

async function ensureFamily(tool: Tool, cidrs: string[]): Promise<void> {
  const lines = ['*nat', `:${MASQ_CHAIN} - [0:0]`];
  for (const cidr of cidrs) lines.push(`-A ${MASQ_CHAIN} -d ${cidr} -j RETURN`);
  lines.push(`-A ${MASQ_CHAIN} -j MASQUERADE`, 'COMMIT', '');
  await run(tool.restore, ['-w', '--noflush'], { input: lines.join('\n') });
  // The jumps from POSTROUTING: exactly one per cluster CIDR, and none for CIDRs no longer configured.
  const existing = await currentJumps(tool);
  for (const cidr of cidrs) {
    if (!existing.includes(cidr)) await run(tool.table, ['-w', '-t', 'nat', '-A', 'POSTROUTING', ...jumpRule(cidr)]);
  }
  for (const cidr of existing) {
    if (!cidrs.includes(cidr)) await tryRun(tool.table, ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...jumpRule(cidr)]);
  }
}

/** Source CIDRs of the POSTROUTING rules that jump to our chain (duplicates kept, so they can be seen). */
async function currentJumps(tool: Tool): Promise<string[]> {
  const out = await run(tool.table, ['-w', '-t', 'nat', '-S', 'POSTROUTING']);
  return out
    .split('\n')
    .filter((l) => l.includes(`-j ${MASQ_CHAIN}`))
    .map((l) => /-s (\S+)/.exec(l)?.[1] ?? '')
    .filter(Boolean);
}

/** Installs or updates the masquerade rules for the given cluster CIDRs (IPv4 and IPv6). */
export async function ensureMasquerade(clusterCidrs: string[]): Promise<void> {
  const v4 = clusterCidrs.filter((c) => !c.includes(':'));
  const v6 = clusterCidrs.filter((c) => c.includes(':'));
  if (v4.length > 0) await ensureFamily(IPV4, v4);
  if (v6.length > 0) await ensureFamily(IPV6, v6);
}

async function removeFamily(tool: Tool): Promise<void> {
  for (const cidr of await currentJumps(tool).catch(() => [])) {
    await tryRun(tool.table, ['-w', '-t', 'nat', '-D', 'POSTROUTING', ...jumpRule(cidr)]);
  }
  await tryRun(tool.table, ['-w', '-t', 'nat', '-F', MASQ_CHAIN]);
  await tryRun(tool.table, ['-w', '-t', 'nat', '-X', MASQ_CHAIN]);
}

/** Removes every rule and the chain (uninstall). Safe to call when nothing is installed. */
export async function removeMasquerade(): Promise<void> {
  await removeFamily(IPV4);
  await removeFamily(IPV6);
}
