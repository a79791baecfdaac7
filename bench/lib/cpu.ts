// CPU time of processes from /proc, for "CPU seconds per GB moved".
import { readdirSync, readFileSync } from 'node:fs';

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** utime + stime of a process and its waited-for children, in seconds (0 if it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may contain spaces: start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** The ids of the threads of `pid` (none once it is gone). */
function threadsOf(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
}

/** A file of one thread of `pid`; undefined once the thread has ended. */
function threadFile(pid: number, tid: string, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/task/${tid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** utime + stime of the threads of `pid` named `thread` (comm), in seconds (0 if none). */
export function threadCpuSeconds(pid: number, thread: string): number {
  let sum = 0;
  for (const tid of threadsOf(pid)) {
    if (threadFile(pid, tid, 'comm')?.trim() !== thread) continue;
    const stat = threadFile(pid, tid, 'stat');
    if (stat === undefined) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    sum += (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  }
  return sum;
}

export function totalCpuSeconds(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

/**
 * Time on CPU of every thread of `pid`, in ns (/proc/<pid>/task/<tid>/schedstat: the
 * scheduler's own count, not 10-ms ticks, so a few hundred pings' worth is measurable); 0 if
 * it is gone.
 */
export function cpuNanoseconds(pid: number): number {
  let sum = 0;
  for (const tid of threadsOf(pid)) sum += Number(threadFile(pid, tid, 'schedstat')?.split(' ')[0] ?? 0);
  return sum;
}
