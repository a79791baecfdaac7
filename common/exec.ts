// Running system tools (ip, iptables, nsenter, tc) with errors that say what failed. Host
// networking's own `ip` commands are built in common/host-net/iproute2.ts.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export class CommandError extends Error {
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(command: string, exitCode: number | null, stderr: string) {
    super(`\`${command}\` failed (exit ${exitCode}): ${stderr.trim() || 'no output'}`);
    this.name = 'CommandError';
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

function quote(args: readonly string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)).join(' ');
}

/** Runs a command and returns its stdout; throws CommandError (with stderr) on failure. */
export async function run(
  file: string,
  args: readonly string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<string> {
  if (options.input !== undefined) return runWithInput(file, args, options.input, options.timeoutMs);
  try {
    const { stdout } = await execFileAsync(file, args, {
      maxBuffer: 64 * 1024 * 1024,
      timeout: options.timeoutMs ?? 60_000,
    });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { code?: number | string; stderr?: string };
    if (e.code === 'ENOENT') throw new CommandError(quote([file, ...args]), null, `${file}: command not found`);
    throw new CommandError(quote([file, ...args]), typeof e.code === 'number' ? e.code : null, e.stderr ?? String(err));
  }
}

function runWithInput(file: string, args: readonly string[], input: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      reject(
        new CommandError(
          quote([file, ...args]),
          null,
          err.code === 'ENOENT' ? `${file}: command not found` : err.message,
        ),
      );
    });
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new CommandError(quote([file, ...args]), code, stderr));
    });
    child.stdin.end(input);
  });
}

/** Like run(), but resolves to false instead of throwing when the command fails. */
export async function tryRun(file: string, args: readonly string[]): Promise<boolean> {
  try {
    await run(file, args);
    return true;
  } catch {
    return false;
  }
}
