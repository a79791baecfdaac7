// Resident memory of processes from /proc, for the memory benchmarks.
import { readFile } from 'node:fs/promises';

/** A process's resident set (VmRSS), in KiB; NaN when /proc does not say. */
export async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN);
}
