// Network namespace and process helpers shared by the lab and the privileged tests.
// Every name carries a per-run prefix so two runs (or two labs) never collide.
import { randomBytes } from 'node:crypto';
import { run, tryRun } from './exec.ts';

/** A short random prefix like "em3f9a-": interface names must stay within 15 characters. */
export function runPrefix(tag = 'em'): string {
  return `${tag}${randomBytes(2).toString('hex')}-`;
}

export async function createNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Kills every process still inside the namespace, then deletes it. Never throws. */
export async function deleteNetns(name: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', name]).catch(() => '');
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await tryRun('ip', ['netns', 'del', name]);
}

export async function listNetns(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']).catch(() => '');
  return out
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

/** Runs a command inside a named namespace (`ip netns exec`). */
export function runIn(netns: string, file: string, args: readonly string[], input?: string): Promise<string> {
  return run('ip', ['netns', 'exec', netns, file, ...args], input === undefined ? {} : { input });
}

/** Deletes every namespace whose name starts with `prefix` (crash clean-up). */
export async function deleteNetnsWithPrefix(prefix: string): Promise<string[]> {
  const doomed = (await listNetns()).filter((n) => n.startsWith(prefix));
  await Promise.all(doomed.map(deleteNetns));
  return doomed;
}
