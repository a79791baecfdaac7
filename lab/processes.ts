// Long-running lab processes (API server, agents): started inside a lab namespace, detached
// so they outlive `lab up`, output to log files under the lab directory, and recorded in the
// state file with pid + start time so `lab down` finds exactly them again.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { type LabState, processStartTime, REPO_ROOT, type RecordedProcess } from './state.ts';

const COMPILE_CACHE = join(REPO_ROOT, 'node_modules', '.cache', 'edgemesh-lab');
const SOURCE_CACHE = join(REPO_ROOT, 'node_modules', '.cache', 'edgemesh-lab-sources');

export interface StartedProcess extends RecordedProcess {
  stdoutPath: string;
  stderrPath: string;
}

/** A clean environment: the agent reads NODE_NAME/EDGEMESH_* from its environment, so the user's must not leak in. */
export function processEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
  };
  // The log level, and where the agents read their TUN and UDP socket (to compare the
  // readers in a lab: EDGEMESH_TUN_READERS=adaptive npm start).
  for (const name of ['EDGEMESH_LOG_LEVEL', 'EDGEMESH_TUN_READERS'] as const) {
    const value = process.env[name];
    if (value) env[name] = value;
  }
  // Seven Node processes load the same modules at once; V8's on-disk compile cache cuts
  // their start-up CPU by about a quarter from the second lab on (measured: 2.6–3.1 → 1.9–2.1
  // user-s per agent import). It lives with the other tool caches in node_modules/.cache.
  env.NODE_COMPILE_CACHE = process.env.NODE_COMPILE_CACHE ?? COMPILE_CACHE;
  return { ...env, ...extra };
}

/**
 * An agent's environment: as the DaemonSet runs it, with its stripped sources from a cache
 * on disk (bin/stripped-sources.js) and without Node's compile cache, which would keep every
 * entry in memory and make the lab's agents bigger than the deployed ones.
 */
export function agentProcessEnv(): NodeJS.ProcessEnv {
  const env = processEnv({ EDGEMESH_SOURCE_CACHE: SOURCE_CACHE });
  delete env.NODE_COMPILE_CACHE;
  return env;
}

/**
 * Starts `argv` inside `netns` (`ip netns exec` execs, so the pid is the program's own),
 * records it, and returns at once. stdout/stderr go to the given files (appended).
 */
export async function startInNetns(
  state: LabState,
  name: string,
  netns: string,
  argv: string[],
  logs: { stdout: string; stderr: string },
  env: NodeJS.ProcessEnv = processEnv(),
): Promise<StartedProcess> {
  const out = openSync(logs.stdout, 'a');
  const err = logs.stderr === logs.stdout ? out : openSync(logs.stderr, 'a');
  let pid: number | undefined;
  try {
    const child = spawn('ip', ['netns', 'exec', netns, ...argv], { detached: true, stdio: ['ignore', out, err], env });
    child.on('error', () => {}); // surfaces below as a missing pid
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(out);
    if (err !== out) closeSync(err);
  }
  if (pid === undefined) throw new Error(`cannot start ${name} (${argv[0]})`);
  const startTime = (await processStartTime(pid)) ?? '';
  const p = { name, pid, startTime, netns };
  await state.recordProcess(p);
  return { ...p, stdoutPath: logs.stdout, stderrPath: logs.stderr };
}

export async function isAlive(p: RecordedProcess): Promise<boolean> {
  const t = await processStartTime(p.pid);
  return t !== null && t === p.startTime;
}

/** The last `lines` lines of a log file, for error messages. */
export async function tail(path: string, lines = 15): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** GET over a unix socket (the agents' control API); resolves to status code and body. */
export function getUnix(socketPath: string, path: string, timeoutMs = 3000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} on ${socketPath}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Polls `check` until it returns a value, the deadline passes (throws `onTimeout()`), or `dead()` says to stop. */
export async function waitFor<T>(
  check: () => Promise<T | undefined>,
  opts: {
    timeoutMs: number;
    intervalMs?: number;
    onTimeout: () => Promise<Error>;
    dead?: () => Promise<Error | undefined>;
    signal?: AbortSignal;
  },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    opts.signal?.throwIfAborted();
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    const dead = await opts.dead?.();
    if (dead) throw dead;
    if (Date.now() > deadline) throw await opts.onTimeout();
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
}
