// Shared set-up for the CNI integration tests: a "node" namespace created by the test, the
// CNI server (cni/standalone.ts) running inside it, pod namespaces, and the real C client
// called exactly as a container runtime calls it (env + stdin, stdout + exit code).
// Everything carries a per-run prefix and is removed by cleanup(), also after failures.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execPlugin as runPlugin } from '../../../cni/exec-plugin.ts';
import { run } from '../../../common/exec.ts';
import { createNetns, deleteNetns, runPrefix } from '../../../common/netns.ts';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const REFERENCE_PLUGINS = '/usr/lib/cni';

/**
 * Installs the C client into a per-run CNI bin dir, as the DaemonSet copies it to /opt/cni/bin.
 * Compiled there with build-native's flags rather than copied from build/, which other
 * engineers' `npm run build:native` may be rewriting at this very moment.
 */
export async function installClient(binDir: string): Promise<string> {
  await mkdir(binDir, { recursive: true });
  const target = join(binDir, 'edgemesh');
  const flags = [
    '-O2',
    '-Wall',
    '-Wextra',
    '-Werror=implicit-function-declaration',
    '-std=gnu11',
    '-pthread',
    '-static',
  ];
  const dir = join(ROOT, 'cni', 'client');
  const sources = (await readdir(dir)).filter((f) => f.endsWith('.c')).map((f) => join(dir, f));
  await run(process.env.CC ?? 'cc', [...flags, ...sources, '-o', target]);
  return target;
}

export interface ClientResult {
  code: number;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | undefined;
}

/** Runs an executable CNI plugin (ours or a reference one) the way a runtime does. */
export async function execPlugin(
  file: string,
  env: Record<string, string>,
  stdin: string,
  opts: { netns?: string } = {},
): Promise<ClientResult> {
  const run = await runPlugin(file, env, stdin, opts);
  let json: Record<string, unknown> | undefined;
  try {
    json = run.stdout.trim() ? JSON.parse(run.stdout) : undefined;
  } catch {
    json = undefined;
  }
  return { ...run, json };
}

export interface Attachment {
  containerId: string;
  netns: string;
  ifname: string;
}

export function cniEnv(command: string, a?: Attachment): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_PATH: REFERENCE_PLUGINS,
    ...(a ? { CNI_CONTAINERID: a.containerId, CNI_NETNS: a.netns, CNI_IFNAME: a.ifname } : {}),
  };
}

export interface CniNode {
  prefix: string;
  node: string;
  /** The installed C client (the CNI executable). */
  clientPath: string;
  socket: string;
  stateDir: string;
  v4Block: string;
  v6Block: string;
  /** Network config for our plugin at `cniVersion`, with the socket path. */
  conf(cniVersion: string, extra?: Record<string, unknown>): string;
  /** Calls the C client. */
  client(command: string, a: Attachment | undefined, stdin: string): Promise<ClientResult>;
  /** Creates a pod namespace (removed by cleanup) and returns its attachment. */
  pod(name: string, ifname?: string): Promise<Attachment>;
  /** Creates an extra namespace that cleanup removes. */
  netns(name: string): Promise<string>;
  /** The CNI server's pid (`ip netns exec` execs it), while it runs. */
  serverPid(): number | undefined;
  stopServer(): Promise<void>;
  /** The plumbing counters the server wrote when it stopped. */
  counters(): Promise<{ helperStarts: number; helperFailures: number; iproute2Fallbacks: number }>;
  cleanup(): Promise<void>;
}

export async function startCniNode(
  opts: {
    clusterCidrs?: string[];
    masquerade?: boolean;
    v4Block?: string;
    v6Block?: string | null;
    /**
     * Plumb through the C netlink helper (default), through iproute2 processes (false), or
     * through the helper at this path (e.g. one that cannot run).
     */
    netlinkHelper?: boolean | string;
  } = {},
): Promise<CniNode> {
  const prefix = runPrefix('cn');
  const node = `${prefix}node`;
  const stateDir = join('/tmp', `${prefix}cni`);
  const socket = join(stateDir, 'cni.sock');
  const namespaces = [node];
  const v4Block = opts.v4Block ?? '10.244.7.0/24';
  const v6Block = opts.v6Block === null ? '' : (opts.v6Block ?? 'fd00:10:244:7::/64');
  let server: ChildProcess | undefined;
  let clientPath = '';
  const cleanup = async () => {
    await stopServer();
    for (const ns of namespaces) await deleteNetns(ns);
    await rm(stateDir, { recursive: true, force: true });
  };
  const stopServer = async () => {
    const s = server;
    server = undefined;
    if (!s || s.exitCode !== null) return;
    const exited = new Promise((r) => s.once('exit', r));
    s.kill('SIGTERM');
    const timer = setTimeout(() => s.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await createNetns(node);
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    clientPath = await installClient(join(stateDir, 'bin'));
    const args = [
      'netns',
      'exec',
      node,
      process.execPath,
      join(ROOT, 'cni', 'standalone.ts'),
      '--socket',
      socket,
      '--state-dir',
      join(stateDir, 'ipam'),
      '--block',
      v4Block,
      ...(v6Block ? ['--block', v6Block] : []),
      ...(opts.clusterCidrs ?? []).flatMap((c) => ['--cluster-cidr', c]),
      ...(opts.masquerade === false ? ['--no-masquerade'] : []),
      ...(opts.netlinkHelper === false
        ? []
        : ['--netlink-helper', typeof opts.netlinkHelper === 'string' ? opts.netlinkHelper : clientPath]),
      ...['--counters', join(stateDir, 'counters.json')],
    ];
    server = spawn('ip', args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, EDGEMESH_LOG_LEVEL: 'warn' },
    });
    const s = server;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`CNI server did not start: ${output}`)), 30_000);
      const onData = (d: Buffer) => {
        output += d.toString();
        if (output.includes('ready\n')) {
          clearTimeout(timer);
          resolve();
        }
      };
      s.stdout!.on('data', onData);
      s.stderr!.on('data', (d: Buffer) => {
        output += d.toString();
      });
      s.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`CNI server exited (${code}): ${output}`));
      });
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
  return {
    prefix,
    node,
    clientPath,
    socket,
    stateDir,
    v4Block,
    v6Block,
    conf: (cniVersion, extra = {}) =>
      JSON.stringify({ cniVersion, name: 'edgemesh-test', type: 'edgemesh', socket, ...extra }),
    client: (command, a, stdin) => execPlugin(clientPath, cniEnv(command, a), stdin),
    pod: async (name, ifname = 'eth0') => {
      const ns = `${prefix}${name}`;
      namespaces.push(ns);
      await createNetns(ns);
      return { containerId: `${prefix}${name}-${Date.now()}`, netns: `/var/run/netns/${ns}`, ifname };
    },
    netns: async (name) => {
      const ns = `${prefix}${name}`;
      namespaces.push(ns);
      await createNetns(ns);
      return ns;
    },
    serverPid: () => server?.pid,
    stopServer,
    counters: async () => JSON.parse(await readFile(join(stateDir, 'counters.json'), 'utf8')),
    cleanup,
  };
}

/** Pings from inside a namespace (path of a pod netns or a name); true when answered. */
export async function ping(netnsPath: string, address: string): Promise<boolean> {
  try {
    await run('nsenter', [`--net=${netnsPath}`, 'ping', '-c', '1', '-W', '2', address]);
    return true;
  } catch {
    return false;
  }
}

/** Interface names in a named namespace. */
export async function links(ns: string): Promise<string[]> {
  const out = JSON.parse(await run('ip', ['-n', ns, '-j', 'link', 'show'])) as { ifname: string }[];
  return out.map((l) => l.ifname);
}

export function nsName(path: string): string {
  return path.split('/').pop()!;
}
