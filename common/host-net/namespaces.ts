// Named network namespaces (`ip netns`), for the lab, the benchmarks and the privileged tests.
import { run } from '../exec.ts';
import { inNetns, ip } from './iproute2.ts';

export { inNetns };

export async function createNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
  await ip(['link', 'set', 'lo', 'up'], { netns: name });
}

/** Kills every process still inside the namespace, then deletes it. Never throws. */
export async function deleteNetns(name: string): Promise<void> {
  const pids = await ip(['netns', 'pids', name]).catch(() => '');
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await ip(['netns', 'del', name]).catch(() => undefined);
}

export async function listNetns(): Promise<string[]> {
  const out = await ip(['netns', 'list']).catch(() => '');
  return out
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

/** Runs a command inside a named namespace and returns its stdout. */
export function runIn(netns: string, file: string, args: readonly string[], input?: string): Promise<string> {
  const [cmd, argv] = inNetns(netns, file, args);
  return run(cmd, argv, input === undefined ? {} : { input });
}

/** Deletes every namespace whose name starts with `prefix` (crash clean-up). */
export async function deleteNetnsWithPrefix(prefix: string): Promise<string[]> {
  const doomed = (await listNetns()).filter((n) => n.startsWith(prefix));
  await Promise.all(doomed.map(deleteNetns));
  return doomed;
}
