// A real container runtime calls the plugin: on a lab node whose agent runs from the image
// (`lab up --containers`), Debian's podman with its CNI network backend (libcni 1.1, as in
// containerd 1.6/1.7) starts a container from a local image (Debian's busybox-static,
// `podman import`ed) on the conflist the agent wrote, unmodified. The container gets a Pod IP,
// reaches pods on the other edge site (behind another NAT) and the cloud by Pod IP, is
// reachable from them, and removing it runs DEL: no lease, veth, rule or netns left.
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, tryRun } from '../../common/exec.ts';
import { decodeRecord, JOURNAL_FILE, SNAPSHOT_FILE } from '../../ipam/lease-journal.ts';
import { podmanRlimitFlags } from '../../lab/agent-container.ts';
import { type Lab, labUp } from '../../lab/lab.ts';
import { pingFrom } from '../../lab/network.ts';
import { type BuiltImage, buildAgentImage, imageIds } from './helpers/agent-image.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

const execFileAsync = promisify(execFile);
const NODE = 'edge-a-1';
const BUSYBOX = '/bin/busybox'; // Debian's busybox-static (scripts/setup.sh installs it)

/** The leases the node's agent holds (snapshot + journal), read without touching the files. */
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

const normaliseRules = (t: string) =>
  t
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');

describe('podman (CNI backend) on a lab node calls the edgemesh plugin', () => {
  let before: HostSnapshot;
  let imagesBefore: string[] = [];
  let image: BuiltImage | undefined;
  let lab: Lab | undefined;
  let work: string | undefined;
  let busyboxTag = '';
  let ctr = '';
  let env: NodeJS.ProcessEnv = {};
  let conflistBefore = '';
  let ip = '';
  let hostBefore: { veths: string[]; iptables: string; leases: string[]; cniNetns: string[] };

  /** podman as a runtime on the node: in the node's network namespace, with its CNI config. */
  const podman = async (args: string[]): Promise<string> => {
    const node = lab!.node(NODE);
    const { stdout } = await execFileAsync('nsenter', [`--net=/run/netns/${node.netns}`, 'podman', ...args], {
      env,
      timeout: 120_000,
    });
    return stdout;
  };
  const nodeState = async () => {
    const node = lab!.node(NODE);
    const veths = (await run('ip', ['-n', node.netns, '-o', 'link', 'show', 'master', 'edgemesh-br0']))
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(':')[1]!.trim())
      .sort();
    const iptables = normaliseRules(await run('ip', ['netns', 'exec', node.netns, 'iptables-save']));
    const cniNetns = (await run('ip', ['netns', 'list'])).split('\n').filter((l) => l.startsWith('cni-'));
    return { veths, iptables, leases: await leaseIds(node.stateDir), cniNetns };
  };

  beforeAll(async () => {
    before = await snapshotHost();
    imagesBefore = await imageIds();
    image = await buildAgentImage();
    lab = await labUp({ containers: { image: image.tag }, progress: (l) => console.log(l), readyTimeoutMs: 120_000 });
    const node = lab.node(NODE);
    // A local image, no registry: busybox-static's binary and the applets the test runs.
    work = await mkdtemp(join(tmpdir(), 'edgemesh-podman-'));
    const rootfs = join(work, 'rootfs');
    await mkdir(join(rootfs, 'bin'), { recursive: true });
    await copyFile(BUSYBOX, join(rootfs, 'bin', 'busybox'));
    await run('chmod', ['0755', join(rootfs, 'bin', 'busybox')]);
    for (const applet of ['sh', 'ping', 'ip', 'sleep']) await symlink('busybox', join(rootfs, 'bin', applet));
    busyboxTag = `localhost/${lab.prefix}busybox:test`;
    await run('sh', ['-c', `tar -C '${rootfs}' -c . | podman import --change 'CMD ["/bin/sh"]' - '${busyboxTag}'`]);
    // The runtime's CNI settings: the node's conf dir (the agent's conflist, as it wrote it)
    // and bin dir (the thin client the agent installed). runc: crun cannot set rlimits here.
    const conf = join(work, 'containers.conf');
    await writeFile(
      conf,
      [
        '[network]',
        'network_backend = "cni"',
        `cni_plugin_dirs = ["${node.cniBinDir}"]`,
        `network_config_dir = "${node.cniConfDir}"`,
        '[engine]',
        'runtime = "runc"',
        '',
      ].join('\n'),
    );
    env = { ...process.env, CONTAINERS_CONF: conf };
    ctr = `${lab.prefix}busybox`;
    conflistBefore = await readFile(join(node.cniConfDir, '10-edgemesh.conflist'), 'utf8');
    hostBefore = await nodeState();
  }, 900_000);

  afterAll(async () => {
    // With the node's CNI settings while the lab runs, so the runtime's DEL still reaches the agent.
    if (ctr && lab) await podman(['rm', '--force', '--ignore', '--time', '0', ctr]).catch(() => '');
    if (ctr) await tryRun('podman', ['rm', '--force', '--ignore', '--time', '0', ctr]);
    if (busyboxTag) await tryRun('podman', ['rmi', '--force', '--ignore', busyboxTag]);
    await lab?.down();
    await image?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("starts a container on the agent's conflist, unmodified, and it gets a Pod IP of the node's block", async () => {
    await podman([
      'run',
      '--detach',
      '--name',
      ctr,
      '--network',
      'edgemesh',
      ...podmanRlimitFlags(),
      busyboxTag,
      'sleep',
      '600',
    ]);
    const nets = JSON.parse(await podman(['inspect', '--format', '{{json .NetworkSettings.Networks}}', ctr])) as Record<
      string,
      { IPAddress: string; Gateway: string }
    >;
    ip = nets.edgemesh!.IPAddress;
    const block = (await lab!.agentStatus(NODE)).podCidrs[0]!;
    expect(ip.split('.').slice(0, 3).join('.')).toBe(block.split('.').slice(0, 3).join('.'));
    expect(await podman(['exec', ctr, 'ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).toContain(`${ip}/`);
    // One more veth on the node's bridge, one more lease, the conflist as the agent wrote it.
    const now = await nodeState();
    expect(now.veths.length).toBe(hostBefore.veths.length + 1);
    const id = (await podman(['inspect', '--format', '{{.Id}}', ctr])).trim();
    expect(now.leases).toContain(id);
    expect(await readFile(join(lab!.node(NODE).cniConfDir, '10-edgemesh.conflist'), 'utf8')).toBe(conflistBefore);
  });

  it('reaches pods on the other edge site (behind both NATs) and in the cloud by Pod IP, and is reached', async () => {
    const targets = lab!.pods.filter((p) => p.node.startsWith('edge-b') || p.node === 'cloud-2');
    for (const t of targets) {
      let ok = false;
      for (let i = 0; i < 20 && !ok; i++) {
        ok = await podman(['exec', ctr, 'ping', '-c', '1', '-W', '1', t.ips[0]!]).then(
          () => true,
          () => false,
        );
      }
      expect(ok, `${ctr} → ${t.name} (${t.ips[0]})`).toBe(true);
    }
    // edge-a → edge-b crosses both NAT routers: never host-gw or direct.
    const peers = (await lab!.agentStatus(NODE)).peers.filter((p) => p.site === 'edge-b');
    expect(peers.length).toBeGreaterThan(0);
    for (const p of peers) expect(['udp-punched', 'udp-relayed', 'hole-punched', 'relayed'], p.node).toContain(p.path);
    const back = lab!.pods.find((p) => p.node === 'edge-b-1')!;
    let rtt: number | null = null;
    for (let i = 0; i < 20 && rtt === null; i++) rtt = await pingFrom(back.netns, ip, 1);
    expect(rtt, `${back.name} → ${ctr} (${ip})`).not.toBeNull();
  });

  it('removing the container runs DEL: no lease, veth, rule or namespace left on the node', async () => {
    const id = (await podman(['inspect', '--format', '{{.Id}}', ctr])).trim();
    await podman(['rm', '--force', '--time', '0', ctr]);
    ctr = '';
    const after = await nodeState();
    expect(after.leases).not.toContain(id);
    expect(after.leases).toEqual(hostBefore.leases);
    expect(after.veths).toEqual(hostBefore.veths);
    expect(after.iptables).toEqual(hostBefore.iptables);
    expect(after.cniNetns.filter((n) => !hostBefore.cniNetns.includes(n))).toEqual([]);
  });

  it('leaves nothing: lab down, the imported image and the agent image removed', async () => {
    await run('podman', ['rmi', busyboxTag]);
    busyboxTag = '';
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    await lab!.down();
    lab = undefined;
    await image!.remove();
    image = undefined;
    const images = await run('podman', ['images', '--format', '{{.Repository}}:{{.Tag}}']);
    expect(images).not.toContain(marks.prefix);
    // No untagged build leftovers either: podman's storage is as the test found it.
    expect((await imageIds()).filter((id) => !imagesBefore.includes(id))).toEqual([]);
    expectNothingLeft(before, await snapshotHost(), marks);
  });
});
