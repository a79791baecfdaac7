// CLI commands contributed by lab/ (registered by bin/cli.ts):
//   lab up | status | exec <target> -- <cmd...> | kubectl ... | matrix | down
import { spawn } from 'node:child_process';
import type { Command } from 'commander';

interface UpFlags {
  topology?: string;
  symmetricNat?: boolean | string;
  nat?: string[];
  nodesPerSite?: string;
  podsPerNode?: string;
  dualStack?: boolean;
  netem?: string[];
  readyTimeout: string;
  keepOnFailure?: boolean;
  containers?: boolean | string;
  json?: boolean;
}

function int(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}: expected a whole number, got "${value}"`);
  return n;
}

function fail(err: unknown): never {
  process.stderr.write(`edgemesh-cni lab: ${(err as Error).message}\n`);
  process.exit(1);
}

async function up(flags: UpFlags): Promise<void> {
  const { labUp } = await import('./lab.ts');
  const { formatMatrix, runMatrix } = await import('./matrix.ts');
  const { defaultTopology, loadTopologyFile, parseNatOption, parseNetemOption } = await import('./topology.ts');
  const started = Date.now();
  const overrides = {
    ...(flags.nodesPerSite !== undefined ? { nodesPerSite: int('--nodes-per-site', flags.nodesPerSite)! } : {}),
    ...(flags.podsPerNode !== undefined ? { podsPerNode: int('--pods-per-node', flags.podsPerNode)! } : {}),
    ...(flags.dualStack ? { dualStack: true } : {}),
    ...(flags.symmetricNat === undefined
      ? {}
      : { symmetricNat: flags.symmetricNat === true ? true : String(flags.symmetricNat).split(',') }),
    ...(flags.nat?.length ? { nat: parseNatOption(flags.nat) } : {}),
    ...(flags.netem?.length ? { netem: Object.fromEntries(flags.netem.map(parseNetemOption)) } : {}),
  };
  const topology = flags.topology ? await loadTopologyFile(flags.topology, overrides) : defaultTopology(overrides);
  // Ctrl-C while building: stop at the next step and remove the half-built lab.
  const abort = new AbortController();
  const onInterrupt = () => {
    process.stdout.write('interrupted: stopping and removing the lab (Ctrl-C again to leave it for `lab down`)\n');
    process.once('SIGINT', () => process.exit(130));
    abort.abort(new Error('interrupted'));
  };
  process.once('SIGINT', onInterrupt);
  const lab = await labUp({
    topology,
    progress: (line) => process.stdout.write(`${line}\n`),
    readyTimeoutMs: Number(flags.readyTimeout) * 1000,
    keepOnFailure: flags.keepOnFailure ?? false,
    ...(flags.containers === undefined
      ? {}
      : { containers: flags.containers === true ? {} : { image: String(flags.containers) } }),
    signal: abort.signal,
  });
  process.removeListener('SIGINT', onInterrupt);
  const result = await runMatrix(lab);
  if (flags.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`\n${formatMatrix(result)}\n`);
  process.stdout.write(
    `\nlab ${lab.id} up in ${((Date.now() - started) / 1000).toFixed(1)} s and left running:\n` +
      `  edgemesh-cni lab exec ${lab.pods[0]?.name ?? '<pod>'} -- ping ${lab.pods.at(-1)?.ips[0] ?? '<ip>'}\n` +
      '  edgemesh-cni lab status | lab kubectl get nodes | lab down\n',
  );
  process.exit(result.ok ? 0 : 1);
}

async function status(flags: { id?: string; json?: boolean }): Promise<void> {
  const { Lab } = await import('./lab.ts');
  const { isAlive } = await import('./processes.ts');
  const { labSites } = await import('./network.ts');
  const lab = await Lab.attach(flags.id);
  const sites = labSites(lab.network);
  const procs = await Promise.all(lab.state.data.processes.map(async (p) => ({ ...p, alive: await isAlive(p) })));
  const agents = await Promise.all(
    lab.nodes.map(async (n) => ({ node: n, status: await lab.agentStatus(n.name).catch(() => undefined) })),
  );
  if (flags.json) {
    process.stdout.write(
      `${JSON.stringify({ state: lab.state.data, sites, processes: procs, agents: agents.map((a) => a.status ?? null) }, null, 2)}\n`,
    );
    return;
  }
  const d = lab.state.data;
  const out = [
    `lab ${d.id} (${d.phase}, since ${d.createdAt}) — ${d.dir}`,
    `API server ${lab.apiUrl} in ${lab.network.apiNetns}; kubeconfig ${lab.kubeconfig}`,
    '',
    'SITE      KIND    NAT          ADDRESS          NETWORK',
    ...sites.map((s) =>
      [s.name.padEnd(10), s.kind.padEnd(8), (s.nat ?? '-').padEnd(13), (s.wanIp ?? '-').padEnd(17), s.network].join(''),
    ),
    '',
    'NODE          SITE      NAMESPACE          ADDRESS          AGENT   NAT (seen)            POD CIDRS        PEERS (path)',
  ];
  for (const { node, status } of agents) {
    const proc = procs.find((p) => p.name === `agent ${node.name}`);
    const peers = status?.peers.map((p) => `${p.node}:${p.path}`).join(' ') ?? '';
    out.push(
      [
        node.name.padEnd(14),
        node.site.padEnd(10),
        node.netns.padEnd(19),
        (node.publicIp ?? node.ip).padEnd(17),
        (proc?.alive ? (status ? 'up' : 'no-api') : 'DOWN').padEnd(8),
        // The NAT kind the node's reflection found (none = public).
        (status?.natKind ?? '-').padEnd(22),
        (status?.podCidrs.join(',') ?? '-').padEnd(17),
        peers,
      ].join(''),
    );
  }
  out.push('', 'POD                 NODE          NAMESPACE          IPS');
  for (const p of lab.pods)
    out.push(`${p.name.padEnd(20)}${p.node.padEnd(14)}${p.netns.padEnd(19)}${p.ips.join(', ')}`);
  const api = procs.find((p) => p.name === 'kube-apiserver');
  out.push('', `kube-apiserver: ${api?.alive ? 'running' : 'DOWN'} (pid ${api?.pid ?? '-'})`);
  process.stdout.write(`${out.join('\n')}\n`);
}

async function exec(target: string, argv: string[], flags: { id?: string }): Promise<void> {
  const { Lab } = await import('./lab.ts');
  const lab = await Lab.attach(flags.id);
  const netns = lab.netnsOf(target);
  if (argv.length === 0) argv = [process.env.SHELL ?? '/bin/sh'];
  const child = spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: 'inherit' });
  child.on('error', fail);
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
}

async function kubectl(args: string[], flags: { id?: string }): Promise<void> {
  const { Lab } = await import('./lab.ts');
  const lab = await Lab.attach(flags.id);
  const child = spawn(
    'ip',
    ['netns', 'exec', lab.network.apiNetns, 'kubectl', '--kubeconfig', lab.kubeconfig, ...args],
    {
      stdio: 'inherit',
    },
  );
  child.on('error', fail);
  child.on('exit', (code) => process.exit(code ?? 1));
}

async function matrix(flags: { id?: string; json?: boolean; timeout: string }): Promise<void> {
  const { Lab } = await import('./lab.ts');
  const { formatMatrix, runMatrix } = await import('./matrix.ts');
  const lab = await Lab.attach(flags.id);
  const result = await runMatrix(lab, { timeoutMs: Number(flags.timeout) * 1000 });
  process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : `${formatMatrix(result)}\n`);
  process.exit(result.ok ? 0 : 1);
}

async function down(flags: { id?: string; all?: boolean }): Promise<void> {
  const { labDown } = await import('./lab.ts');
  const { LabState } = await import('./state.ts');
  if (!flags.id && !flags.all) {
    // Several labs (a test run and a demo, say): do not guess which one to destroy.
    const labs = await LabState.all();
    if (labs.length > 1) {
      throw new Error(
        `${labs.length} labs are up (${labs.map((l) => l.data.id).join(', ')}): name one with --id, or use --all`,
      );
    }
  }
  const reports = await labDown(flags.id);
  if (reports.length === 0) process.stdout.write('no lab to take down\n');
  for (const r of reports) {
    process.stdout.write(
      `lab ${r.id} down: ${r.pods} pods deleted (CNI DEL), ${r.processes} processes stopped, ${r.namespaces.length} namespaces removed\n`,
    );
  }
}

export function register(program: Command): void {
  const lab = program.command('lab').description('an emulated multi-site edge cluster on this machine (needs root)');
  const collect = (value: string, previous: string[] = []) => [...previous, value];
  lab
    .command('up')
    .description('build the lab, start the API server and one agent per node, create pods, print the matrix')
    .option('--topology <file>', 'YAML/JSON topology overriding the built-in one')
    .option('--symmetric-nat [sites]', 'shorthand for --nat symmetric on every NAT site, or on SITE[,SITE]')
    .option(
      '--nat <kinds>',
      'NAT kind of every NAT site (KIND) or per site (SITE=KIND[,SITE=KIND]); kinds: masquerade (default), remap, symmetric, udp-blocked',
      collect,
    )
    .option('--nodes-per-site <n>', 'nodes per site')
    .option('--pods-per-node <m>', 'pods per node')
    .option('--dual-stack', 'IPv4 + IPv6 pods (cluster CIDRs 10.244.0.0/16 and fd00:10:244::/56)')
    .option('--netem <site:spec>', 'delay/loss on a site uplink, e.g. edge-a:delay=40ms,loss=1% (repeatable)', collect)
    .option('--ready-timeout <s>', 'seconds agents may take to become ready', '60')
    .option('--keep-on-failure', 'leave a failed lab in place for debugging (then `lab down`)')
    .option(
      '--containers [image]',
      "run each agent from the agent image under podman with deploy/daemonset.yaml's container contract (default image: `npm run image`'s)",
    )
    .option('--json', 'print the matrix as JSON')
    .action((flags: UpFlags) => up(flags).catch(fail));
  lab
    .command('status')
    .description('sites (NAT kind), nodes, agents, paths and pods of the running lab')
    .option('--id <id>', 'lab id (default: the newest)')
    .option('--json', 'machine-readable')
    .action((flags) => status(flags).catch(fail));
  lab
    .command('exec <target> [cmd...]')
    .description(
      'run a command in a pod, node, router (rtr-a), inet or api namespace: lab exec edge-a-1-p1 -- ping 10.244.1.2',
    )
    .option('--id <id>', 'lab id (default: the newest)')
    .action((target: string, cmd: string[], flags) => exec(target, cmd, flags).catch(fail));
  lab
    .command('kubectl [args...]')
    .description('kubectl against the lab API server: lab kubectl -- get nodes -o wide')
    .option('--id <id>', 'lab id (default: the newest)')
    .action((args: string[], flags) => kubectl(args, flags).catch(fail));
  lab
    .command('matrix')
    .description('ping by Pod IP between pods of every site pair and show the path each took')
    .option('--id <id>', 'lab id (default: the newest)')
    .option('--timeout <s>', 'seconds to wait for the first reply per pair', '20')
    .option('--json', 'machine-readable')
    .action((flags) => matrix(flags).catch(fail));
  lab
    .command('down')
    .description('remove every namespace, process, rule and file of the lab, also after a crash')
    .option('--id <id>', 'this lab (needed when several are up)')
    .option('--all', 'every lab under .lab/')
    .action((flags) => down(flags).catch(fail));
}
