// CLI commands contributed by agent/ (registered by bin/cli.ts): `agent` runs the node
// agent; `status` and `capture` talk to a running agent over its control socket;
// `uninstall` removes what the agent set up on the host.
import { createWriteStream } from 'node:fs';
import type { Command } from 'commander';
import { ConfigError } from '../common/config.ts';

const DEFAULT_RUN_DIR = '/run/edgemesh';

function fail(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`edgemesh-cni: ${message}\n`);
  process.exit(err instanceof ConfigError ? 2 : 1);
}

/** The run dir from --run-dir, else from the agent's config file, else the default. */
async function runDirOf(opts: { runDir?: string; config?: string }): Promise<string> {
  if (opts.runDir) return opts.runDir;
  if (opts.config || process.env.EDGEMESH_CONFIG) {
    const { loadAgentConfig } = await import('./config.ts');
    // Only the paths matter here: tolerate a missing node name.
    return loadAgentConfig({ ...(opts.config ? { config: opts.config } : {}), nodeName: 'status' }).paths.runDir;
  }
  return process.env.EDGEMESH_RUN_DIR ?? DEFAULT_RUN_DIR;
}

function positive(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number`);
    return n;
  };
}

export function register(program: Command): void {
  program
    .command('agent')
    .description('run the node agent (DaemonSet): IPAM, CNI socket, TUN dataplane, libp2p overlay')
    .option('-c, --config <file>', 'agent config YAML (also EDGEMESH_CONFIG)')
    .option('--node-name <name>', 'this node (default: NODE_NAME)')
    .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster credentials)')
    .option('--site <name>', 'site of this node (default: the edgemesh.io/site label)')
    .option('--node-ip <ip>', "this node's address in its site (default: the Node's InternalIP)")
    .option('--state-dir <dir>', 'node key and leases')
    .option('--run-dir <dir>', 'sockets')
    .option('--http-listen <host:port>', '/metrics, /healthz, /readyz')
    .action(async (opts) => {
      const { runAgent } = await import('./run.ts');
      await runAgent(opts).catch(fail);
    });

  program
    .command('status')
    .description('show this node and its peers: path, RTT, traffic (asks the running agent)')
    .option('--run-dir <dir>', `the agent's run dir (default ${DEFAULT_RUN_DIR})`)
    .option('-c, --config <file>', "read the run dir from the agent's config")
    .option('--json', 'print the raw JSON')
    .action(async (opts: { runDir?: string; config?: string; json?: boolean }) => {
      try {
        const { fetchStatus } = await import('./control-api.ts');
        const { formatStatus } = await import('./status.ts');
        const status = await fetchStatus(`${await runDirOf(opts)}/agent.sock`);
        process.stdout.write(opts.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
      } catch (err) {
        fail(err);
      }
    });

  program
    .command('capture')
    .description('capture packets the agent forwards through its tunnels (pcap, LINKTYPE_RAW)')
    .requiredOption('-w, --write <file>', 'pcap file to write ("-" for stdout, e.g. | tcpdump -r -)')
    .option('--run-dir <dir>', `the agent's run dir (default ${DEFAULT_RUN_DIR})`)
    .option('-c, --config <file>', "read the run dir from the agent's config")
    .option('--seconds <n>', 'stop after n seconds', positive('--seconds'), 10)
    .option('--packets <n>', 'stop after n packets', positive('--packets'), 1000)
    .option('--peer <node>', 'only packets to or from this peer node')
    .option('--host <ip>', 'only packets from or to this address')
    .option('--proto <p>', 'only this protocol: tcp, udp, icmp, icmpv6 or a number')
    .action(
      async (opts: {
        write: string;
        runDir?: string;
        config?: string;
        seconds: number;
        packets: number;
        peer?: string;
        host?: string;
        proto?: string;
      }) => {
        try {
          const { fetchCapture } = await import('./control-api.ts');
          const out = opts.write === '-' ? process.stdout : createWriteStream(opts.write, { mode: 0o600 });
          await fetchCapture(
            `${await runDirOf(opts)}/agent.sock`,
            { seconds: opts.seconds, packets: opts.packets, peer: opts.peer, host: opts.host, proto: opts.proto },
            out,
          );
          if (opts.write !== '-') process.stderr.write(`capture written to ${opts.write}\n`);
        } catch (err) {
          fail(err);
        }
      },
    );

  program
    .command('uninstall')
    .description('remove what the agent created on this host (routes, TUN, bridge, masquerade, CNI files)')
    .option('-c, --config <file>', 'the agent config YAML the node ran with (also EDGEMESH_CONFIG)')
    .option('--purge', 'also delete the leases and the node key')
    .action(async (opts: { config?: string; purge?: boolean }) => {
      try {
        const { loadAgentConfig } = await import('./config.ts');
        const { uninstall } = await import('./uninstall.ts');
        const cfg = loadAgentConfig({
          ...(opts.config ? { config: opts.config } : {}),
          nodeName: process.env.NODE_NAME || 'uninstall',
        });
        const report = await uninstall(cfg, { purge: opts.purge ?? false });
        for (const line of report.removed) process.stdout.write(`removed ${line}\n`);
      } catch (err) {
        fail(err);
      }
    });

  program
    .command('ipam-repair')
    .description('rewrite a corrupt lease journal keeping its valid records (stop the agent first)')
    .option('--lease-dir <dir>', 'the lease directory the agent named in its error')
    .option('-c, --config <file>', "take the lease directory from the agent's config")
    .action(async (opts: { leaseDir?: string; config?: string }) => {
      try {
        let dir = opts.leaseDir;
        if (!dir) {
          const { agentFiles, loadAgentConfig } = await import('./config.ts');
          const cfg = loadAgentConfig({
            ...(opts.config ? { config: opts.config } : {}),
            nodeName: process.env.NODE_NAME || 'ipam-repair',
          });
          dir = agentFiles(cfg).leaseDir;
        }
        const { repairJournal } = await import('../ipam/lease-journal.ts');
        const r = await repairJournal(dir);
        process.stdout.write(`kept ${r.kept} records; the original is saved as ${r.backup}\n`);
        for (const line of r.dropped) process.stdout.write(`dropped: ${line}\n`);
        if (r.dropped.length > 0) {
          process.stdout.write(
            'a dropped allocation may belong to a running pod: compare the pods on this node (kubectl get pods -o wide --field-selector spec.nodeName=<node>) with the kept leases before adding pods\n',
          );
        }
      } catch (err) {
        fail(err);
      }
    });
}
