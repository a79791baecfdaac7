// containerd calls the plugin as Kubernetes drives it: on a lab node whose agent runs from the
// image (`lab up --containers`), Debian's containerd 1.6 (the CRI plugin, libcni 1.1) runs in
// the node's network namespace with the node's CNI dirs, and the test makes the kubelet's CRI
// calls (RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox). The sandbox gets
// a Pod IP from the conflist the agent wrote, reaches pods behind the other NAT and in the
// cloud by Pod IP, and its removal runs DEL: no lease, veth, rule or namespace left.
//
// containerd's own settings for this machine: restrict_oom_score_adj (root here lacks
// CAP_SYS_RESOURCE, so runc cannot give the sandbox the kubelet's oom_score_adj of -998), and
// the `loopback` reference plugin in the node's CNI bin dir, which the CRI plugin needs for a
// pod's lo as every kubeadm node has it (containernetworking-plugins).
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, tryRun } from '../../common/exec.ts';
import { decodeRecord, JOURNAL_FILE, SNAPSHOT_FILE } from '../../ipam/lease-journal.ts';
import { type Lab, labUp } from '../../lab/lab.ts';
import { pingFrom } from '../../lab/network.ts';
import { waitFor } from '../../lab/processes.ts';
import { type BuiltImage, buildAgentImage, imageIds } from './helpers/agent-image.ts';
import { podSandboxStatus, removePodSandbox, runPodSandbox, stopPodSandbox } from './helpers/cri-client.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

const NODE = 'edge-a-1';
const LOOPBACK = '/usr/lib/cni/loopback'; // containernetworking-plugins
const BUSYBOX = '/bin/busybox'; // busybox-static

async function leaseIds(stateDir: string): Promise<string[]> {
  const dir = join(stateDir, 'leases');
  const ids = new Set<string>();
  const snap = await readFile(join(dir, SNAPSHOT_FILE), 'utf8').catch(() => '');
  for (const l of snap ? (JSON.parse(snap) as { leases: Array<{ containerId: string }> }).leases : [])
    ids.add(l.containerId);
  for (const line of (await readFile(join(dir, JOURNAL_FILE), 'utf8').catch(() => '')).split('\n')) {
    const r = decodeRecord(line);
    if (r?.op === 'allocate') ids.add(r.lease.containerId);
    if (r?.op === 'release') ids.delete(r.containerId);
  }
  return [...ids].sort();
}

const cniNetns = async () => (await run('ip', ['netns', 'list'])).split('\n').flatMap((l) => l.match(/^cni-\S+/) ?? []);

describe('containerd (CRI plugin) on a lab node calls the edgemesh plugin', () => {
  let before: HostSnapshot;
  let imagesBefore: string[] = [];
  let image: BuiltImage | undefined;
  let lab: Lab | undefined;
  let work = '';
  let sock = '';
  let containerd: ChildProcess | undefined;
  let pauseTag = '';
  let sandbox = '';
  let ip = '';
  let netns = '';
  let nodeBefore: { veths: string[]; iptables: string; leases: string[]; cniNetns: string[] };

  const nodeState = async () => {
    const node = lab!.node(NODE);
    const veths = (await run('ip', ['-n', node.netns, '-o', 'link', 'show', 'master', 'edgemesh-br0']))
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(':')[1]!.trim())
      .sort();
    const iptables = (await run('ip', ['netns', 'exec', node.netns, 'iptables-save']))
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
      .join('\n');
    return { veths, iptables, leases: await leaseIds(node.stateDir), cniNetns: await cniNetns() };
  };

  beforeAll(async () => {
    before = await snapshotHost();
    imagesBefore = await imageIds();
    image = await buildAgentImage();
    lab = await labUp({ containers: { image: image.tag }, progress: (l) => console.log(l), readyTimeoutMs: 120_000 });
    const node = lab.node(NODE);
    await copyFile(LOOPBACK, join(node.cniBinDir, 'loopback'));
    work = await mkdtemp(join(tmpdir(), 'edgemesh-containerd-'));
    sock = join(work, 'containerd.sock');
    // The sandbox ("pause") image: busybox sleeping, imported like any local image.
    pauseTag = `localhost/${lab.prefix}pause:test`;
    const rootfs = join(work, 'pause-rootfs');
    await mkdir(join(rootfs, 'bin'), { recursive: true });
    await copyFile(BUSYBOX, join(rootfs, 'bin', 'busybox'));
    await run('chmod', ['0755', join(rootfs, 'bin', 'busybox')]);
    await symlink('busybox', join(rootfs, 'bin', 'sleep'));
    await run('sh', [
      '-c',
      `tar -C '${rootfs}' -c . | podman import --change 'CMD ["/bin/sleep","1000000"]' - '${pauseTag}' >/dev/null`,
    ]);
    await run('podman', ['save', '--format', 'docker-archive', '-o', join(work, 'pause.tar'), pauseTag]);
    await run('podman', ['rmi', pauseTag]);
    await writeFile(
      join(work, 'config.toml'),
      [
        'version = 2',
        `root = "${work}/root"`,
        `state = "${work}/state"`,
        '[grpc]',
        `  address = "${sock}"`,
        '[ttrpc]',
        `  address = "${sock}.ttrpc"`,
        '[plugins."io.containerd.grpc.v1.cri"]',
        `  sandbox_image = "${pauseTag}"`,
        '  restrict_oom_score_adj = true',
        '  [plugins."io.containerd.grpc.v1.cri".cni]',
        `    bin_dir = "${node.cniBinDir}"`,
        `    conf_dir = "${node.cniConfDir}"`,
        '',
      ].join('\n'),
    );
    const log = openSync(join(work, 'containerd.log'), 'a');
    containerd = spawn(
      'nsenter',
      [`--net=/run/netns/${node.netns}`, 'containerd', '--config', join(work, 'config.toml')],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    await waitFor(async () => ((await tryRun('ctr', ['--address', sock, 'version'])) ? true : undefined), {
      timeoutMs: 30_000,
      onTimeout: async () => new Error(`containerd did not serve ${sock}`),
    });
    await run('ctr', ['--address', sock, '-n', 'k8s.io', 'images', 'import', join(work, 'pause.tar')]);
    nodeBefore = await nodeState();
  }, 900_000);

  afterAll(async () => {
    if (sandbox && sock) {
      await stopPodSandbox(sock, sandbox).catch(() => {});
      await removePodSandbox(sock, sandbox).catch(() => {});
    }
    if (containerd?.pid && containerd.exitCode === null) {
      const exited = new Promise((r) => containerd!.once('exit', r));
      containerd.kill('SIGTERM');
      await exited;
    }
    await lab?.down();
    await image?.remove();
    if (work) {
      // Snapshots containerd left mounted (only after a failure) go before the directory.
      const mounts = (await readFile('/proc/mounts', 'utf8'))
        .split('\n')
        .map((l) => l.split(' ')[1] ?? '')
        .filter((m) => m.startsWith(work))
        .sort()
        .reverse();
      for (const m of mounts) await tryRun('umount', ['-l', m]);
      await rm(work, { recursive: true, force: true });
    }
  });

  it('RunPodSandbox: the runtime creates the pod namespace and gets a Pod IP of the node block', async () => {
    sandbox = await runPodSandbox(sock, { name: `${lab!.prefix}sandbox`, uid: lab!.id, namespace: 'default' });
    const status = await podSandboxStatus(sock, sandbox);
    expect(status.state).toBe(0); // SANDBOX_READY
    ip = status.ip;
    const block = (await lab!.agentStatus(NODE)).podCidrs[0]!;
    expect(ip.split('.').slice(0, 3).join('.')).toBe(block.split('.').slice(0, 3).join('.'));
    const added = (await cniNetns()).filter((n) => !nodeBefore.cniNetns.includes(n));
    expect(added).toHaveLength(1);
    netns = added[0]!;
    expect(await run('ip', ['-n', netns, '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).toContain(`${ip}/`);
    const now = await nodeState();
    expect(now.leases).toContain(sandbox);
    expect(now.veths.length).toBe(nodeBefore.veths.length + 1);
  });

  it('the sandbox reaches pods behind the other NAT and in the cloud by Pod IP, and is reached', async () => {
    for (const t of lab!.pods.filter((p) => p.node.startsWith('edge-b') || p.node === 'cloud-1')) {
      let rtt: number | null = null;
      for (let i = 0; i < 20 && rtt === null; i++) rtt = await pingFrom(netns, t.ips[0]!, 1);
      expect(rtt, `sandbox → ${t.name} (${t.ips[0]})`).not.toBeNull();
    }
    const peers = (await lab!.agentStatus(NODE)).peers.filter((p) => p.site === 'edge-b');
    for (const p of peers) expect(['udp-punched', 'udp-relayed', 'hole-punched', 'relayed'], p.node).toContain(p.path);
    const back = lab!.pods.find((p) => p.node === 'edge-b-2')!;
    let rtt: number | null = null;
    for (let i = 0; i < 20 && rtt === null; i++) rtt = await pingFrom(back.netns, ip, 1);
    expect(rtt, `${back.name} → sandbox (${ip})`).not.toBeNull();
  });

  it('StopPodSandbox + RemovePodSandbox run DEL: no lease, veth, rule or namespace left', async () => {
    await stopPodSandbox(sock, sandbox);
    await removePodSandbox(sock, sandbox);
    const id = sandbox;
    sandbox = '';
    const after = await nodeState();
    expect(after.leases).not.toContain(id);
    expect(after.leases).toEqual(nodeBefore.leases);
    expect(after.veths).toEqual(nodeBefore.veths);
    expect(after.iptables).toEqual(nodeBefore.iptables);
    expect(after.cniNetns).toEqual(nodeBefore.cniNetns);
  });

  it('leaves nothing: containerd and its shims stopped, lab down, images removed', async () => {
    const exited = new Promise((r) => containerd!.once('exit', r));
    containerd!.kill('SIGTERM');
    await exited;
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    await lab!.down();
    lab = undefined;
    await image!.remove();
    image = undefined;
    expect((await imageIds()).filter((id) => !imagesBefore.includes(id))).toEqual([]);
    const after = await snapshotHost();
    expectNothingLeft(before, after, marks);
    const leftovers = [...after.processes.values()].filter((p) => p.cmdline.includes(work));
    expect(leftovers.map((p) => p.cmdline)).toEqual([]);
    expect((await readFile('/proc/mounts', 'utf8')).includes(work)).toBe(false);
  });
});
