// The runtime side of the CNI protocol (what libcni's invoke does): run a plugin executable
// with the CNI_* environment and the network config on stdin, collect its stdout, stderr
// and exit code. Used by the lab's runtime emulation, the CNI benchmark and the tests.
import { spawn } from 'node:child_process';
import { inNetns } from '../common/host-net/index.ts';

export interface PluginRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function execPlugin(
  file: string,
  env: Record<string, string>,
  stdin: string,
  opts: { netns?: string; timeoutMs?: number } = {},
): Promise<PluginRun> {
  // A runtime runs the plugin in the host's namespace; `netns` names the lab node's.
  const [cmd, args] = opts.netns ? inNetns(opts.netns, file) : [file, []];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.timeoutMs === undefined ? {} : { timeout: opts.timeoutMs }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(stdin);
  });
}
