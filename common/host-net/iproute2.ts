// The one place that starts iproute2 (`ip`): single commands, batches (one process for many
// netlink requests), forced batches that report each refused line, and batches inside a
// namespace given by path (a pod's CNI_NETNS). Every operation in this folder goes through here.
import { CommandError, run } from '../exec.ts';

/** Which network namespace an operation acts in: a named one (`ip -n`), else the caller's. */
export interface NetnsOption {
  netns?: string;
}

function nsArgs(opts: NetnsOption): string[] {
  return opts.netns ? ['-n', opts.netns] : [];
}

/** Runs one `ip` command and returns its stdout. */
export function ip(args: readonly string[], opts: NetnsOption = {}): Promise<string> {
  return run('ip', [...nsArgs(opts), ...args]);
}

/** The command line that runs `file args` inside a named namespace (`ip netns exec`). */
export function inNetns(netns: string, file: string, args: readonly string[] = []): [string, string[]] {
  return ['ip', ['netns', 'exec', netns, file, ...args]];
}

/** Runs `ip -batch -` with the given lines (one netlink round per line, one process). */
export function ipBatch(
  lines: readonly string[],
  opts: NetnsOption & { force?: boolean; json?: boolean } = {},
): Promise<string> {
  const args = [...nsArgs(opts), ...(opts.json ? ['-j'] : []), ...(opts.force ? ['-force'] : []), '-batch', '-'];
  return run('ip', args, { input: `${lines.join('\n')}\n` });
}

/**
 * `ip -batch` inside the namespace at `path` (a CNI_NETNS such as /proc/<pid>/ns/net, which
 * `ip -n` cannot name), entered with nsenter.
 */
export function ipBatchAt(path: string, lines: readonly string[], opts: { json?: boolean } = {}): Promise<string> {
  return run('nsenter', [`--net=${path}`, 'ip', ...(opts.json ? ['-j'] : []), '-batch', '-'], {
    input: `${lines.join('\n')}\n`,
  });
}

/**
 * Runs `ip -force -batch`, so one line the kernel refuses does not keep the lines after it
 * from being applied, and returns the refused lines with iproute2's message for each.
 */
export async function forcedBatch(lines: string[], opts: NetnsOption): Promise<{ line: string; message: string }[]> {
  if (lines.length === 0) return [];
  try {
    await ipBatch(lines, { ...opts, force: true });
    return [];
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    // iproute2 prints the error, then "Command failed -:<line number>" for each refused line.
    const failed: { line: string; message: string }[] = [];
    let message: string[] = [];
    for (const text of err.stderr.split('\n')) {
      const at = /^Command failed -:(\d+)/.exec(text);
      if (!at) {
        if (text.trim()) message.push(text.trim());
        continue;
      }
      failed.push({ line: lines[Number(at[1]) - 1] ?? `line ${at[1]}`, message: message.join(' ') });
      message = [];
    }
    if (failed.length === 0) throw err;
    return failed;
  }
}

/** Messages iproute2 prints when the thing to delete is already gone. */
export function isAlreadyGone(stderr: string): boolean {
  return /No such process|Cannot find device|No such device|does not exist/i.test(stderr);
}

/** True for iproute2's answer about a device that does not exist. */
export function isMissingDevice(err: unknown): boolean {
  return err instanceof CommandError && /does not exist|Cannot find device/.test(err.stderr);
}

/** True when iproute2 refused because the object exists already (EEXIST). */
export function isExisting(err: unknown): boolean {
  return err instanceof CommandError && /File exists/.test(err.stderr);
}

const NAME_RE = /^[A-Za-z0-9_.@-]{1,15}$/;
export function checkDev(dev: string): void {
  if (!NAME_RE.test(dev)) throw new Error(`bad interface name "${dev}" (1-15 characters: letters, digits, _.@-)`);
}

/** Parses `ip -j` output; iproute2 prints nothing at all for an empty listing. */
export function parseJson<T>(out: string): T[] {
  return (out.trim() ? JSON.parse(out) : []) as T[];
}
