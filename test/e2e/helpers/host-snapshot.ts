// What the root namespace and the process table look like, to prove a lab left nothing
// behind: compare a snapshot taken before `lab up` with one taken after `lab down`.
// Other engineers run tests on this machine at the same time, so namespaces and processes
// are compared for the lab's own marks (its prefix, its directory, our own children);
// root links and root firewall rules, which nobody may touch, are compared whole.
import { access, readdir, readFile } from 'node:fs/promises';
import { run } from '../../../common/exec.ts';
import { listNetns } from '../../../common/netns.ts';

export interface HostSnapshot {
  netns: string[];
  links: string[];
  iptables: string;
  ip6tables: string;
  /** Which of the agent's default host paths exist: the lab must put everything under .lab/. */
  hostPaths: string[];
  /** pid → command line, for every process. */
  processes: Map<number, { cmdline: string; ppid: number }>;
}

function normaliseRules(text: string): string {
  return text
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
}

async function processes(): Promise<HostSnapshot['processes']> {
  const out: HostSnapshot['processes'] = new Map();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replaceAll('\0', ' ').trim();
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      out.set(Number(entry), { cmdline, ppid });
    } catch {
      // exited while we looked
    }
  }
  return out;
}

const AGENT_DEFAULT_PATHS = [
  '/run/edgemesh',
  '/var/lib/edgemesh',
  '/etc/cni/net.d/10-edgemesh.conflist',
  '/opt/cni/bin/edgemesh',
];

export async function snapshotHost(): Promise<HostSnapshot> {
  const links = (await run('ip', ['-o', 'link', 'show']))
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':').slice(0, 2).join(':').trim())
    .sort();
  return {
    netns: (await listNetns()).sort(),
    links,
    iptables: normaliseRules(await run('iptables-save', [])),
    ip6tables: normaliseRules(await run('ip6tables-save', [])),
    hostPaths: (
      await Promise.all(
        AGENT_DEFAULT_PATHS.map(async (p) =>
          (await access(p).then(
            () => true,
            () => false,
          ))
            ? p
            : '',
        ),
      )
    ).filter(Boolean),
    processes: await processes(),
  };
}

/** Processes present in `after` but not in `before` whose command line mentions any mark. */
export function newProcessesMatching(before: HostSnapshot, after: HostSnapshot, marks: string[]): string[] {
  const found: string[] = [];
  for (const [pid, p] of after.processes) {
    const old = before.processes.get(pid);
    if (old && old.cmdline === p.cmdline) continue;
    if (marks.some((m) => p.cmdline.includes(m))) found.push(`${pid} ${p.cmdline}`);
  }
  return found;
}

/** Children of this test process (a lab must not leave any running). */
export function childrenOf(snapshot: HostSnapshot, pid = process.pid): string[] {
  return [...snapshot.processes].filter(([, p]) => p.ppid === pid).map(([child, p]) => `${child} ${p.cmdline}`);
}
