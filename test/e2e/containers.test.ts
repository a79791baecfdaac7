// `lab up --containers`: every node's agent runs from the agent image (built here by
// scripts/image.sh) under podman with deploy/daemonset.yaml's container contract. The whole
// Pod-IP matrix must work as with agents run as processes; a killed container agent is
// restarted by the runtime (restart policy Always, as a DaemonSet's), pods keep their IPs
// and traffic resumes; lab down leaves no container, process, namespace or rule behind.
import { readFile, readlink, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../common/exec.ts';
import { loadAgentContract } from '../../lab/agent-container.ts';
import { type Lab, labUp } from '../../lab/lab.ts';
import { formatMatrix, type MatrixResult, runMatrix } from '../../lab/matrix.ts';
import { pingFrom } from '../../lab/network.ts';
import { type BuiltImage, buildAgentImage, containersLabelled, imageIds } from './helpers/agent-image.ts';
import { type HostSnapshot, snapshotHost } from './helpers/host-snapshot.ts';
import { expectNothingLeft } from './helpers/lab-checks.ts';

interface Inspect {
  State: { Pid: number; Status: string };
  RestartCount: number;
  Config: { Env: string[]; Entrypoint: string | string[]; Cmd: string[] | null; Image: string };
  HostConfig: { Privileged: boolean; NetworkMode: string; RestartPolicy: { Name: string }; Memory: number };
  Mounts: Array<{ Source: string; Destination: string; Propagation: string; RW: boolean }>;
}

async function inspect(name: string): Promise<Inspect> {
  return (JSON.parse(await run('podman', ['container', 'inspect', name])) as Inspect[])[0]!;
}

async function pingEventually(netns: string, ip: string, tries = 30): Promise<number | null> {
  let rtt: number | null = null;
  for (let i = 0; i < tries && rtt === null; i++) rtt = await pingFrom(netns, ip, 1);
  return rtt;
}

describe('lab up --containers (agents from the image under podman, DaemonSet contract)', () => {
  let before: HostSnapshot;
  let imagesBefore: string[] = [];
  let image: BuiltImage | undefined;
  let lab: Lab | undefined;
  let matrix: MatrixResult;
  let upSeconds = 0;

  beforeAll(async () => {
    before = await snapshotHost();
    imagesBefore = await imageIds();
    image = await buildAgentImage();
    console.log(
      `agent image ${image.tag}: ${(image.sizeBytes / 1e6).toFixed(0)} MB, built in ${image.buildSeconds.toFixed(1)} s`,
    );
    const t0 = Date.now();
    lab = await labUp({ containers: { image: image.tag }, progress: (l) => console.log(l), readyTimeoutMs: 120_000 });
    upSeconds = (Date.now() - t0) / 1000;
    console.log(`lab up --containers: ${upSeconds.toFixed(1)} s`);
    matrix = await runMatrix(lab);
    console.log(formatMatrix(matrix));
  }, 900_000);

  afterAll(async () => {
    await lab?.down();
    await image?.remove();
  });

  it("runs every agent as a container with the DaemonSet's contract, in its node's network namespace", async () => {
    const contract = loadAgentContract();
    expect(await containersLabelled(`io.edgemesh.lab=${lab!.id}`)).toEqual(
      lab!.nodes.map((n) => lab!.agentContainerName(n.name)).sort(),
    );
    for (const node of lab!.nodes) {
      const c = await inspect(lab!.agentContainerName(node.name));
      expect(c.State.Status).toBe('running');
      expect(c.Config.Image).toContain(image!.tag.replace(/^localhost\//, ''));
      expect(c.HostConfig.Privileged).toBe(true);
      expect(c.HostConfig.NetworkMode).toBe(`ns:/run/netns/${node.netns}`);
      expect(c.HostConfig.RestartPolicy.Name).toBe('always');
      expect(c.HostConfig.Memory).toBe(contract.memoryLimitBytes);
      expect(c.Config.Env).toContain(`NODE_NAME=${node.name}`);
      // The agent's process really is the DaemonSet's command (the entry re-executes node with
      // the agent's V8 flag, same pid), in the node's namespace.
      const cmdline = (await run('cat', [`/proc/${c.State.Pid}/cmdline`])).split('\0').filter(Boolean);
      const [program, ...rest] = contract.command;
      expect(cmdline[0]).toMatch(new RegExp(`(^|/)${program}$`));
      expect(cmdline).toContain('--scavenger-max-new-space-capacity-mb=8');
      expect(cmdline.slice(-rest.length)).toEqual(rest);
      expect(await readlink(`/proc/${c.State.Pid}/ns/net`)).toBe(
        `net:[${(await stat(`/run/netns/${node.netns}`)).ino}]`,
      );
      // The pods' namespaces reach it through a slave mount, as HostToContainer asks.
      const netnsMount = c.Mounts.find((m) => m.Destination === '/var/run/netns');
      expect(netnsMount?.Propagation).toBe('rslave');
      // The agent's own directories: the node's, at the same path inside (the conflist
      // names the socket by its host path).
      for (const dir of [node.runDir, node.stateDir, node.cniBinDir, node.cniConfDir]) {
        expect(c.Mounts.find((m) => m.Source === dir)?.Destination, dir).toBe(dir);
      }
      expect(c.Mounts.find((m) => m.Destination === '/etc/edgemesh')?.RW).toBe(false);
      // The agent runs from the image's bundle, as built (its sources' times kept).
      expect(await readFile(node.logPath, 'utf8')).toContain('"code":"/app/build/agent.js"');
    }
  });

  it('reaches every pod from every node by Pod IP, over the expected path', () => {
    expect(matrix.entries.length).toBe(6 * 5 + 6);
    expect(matrix.entries.filter((e) => !e.ok).map((e) => `${e.from}→${e.to}`)).toEqual([]);
    for (const e of matrix.entries) {
      const where = `${e.from}→${e.to}`;
      if (e.fromNode === e.toNode) expect(e.path, where).toBe('local');
      else if (e.fromSite === e.toSite) expect(e.path, where).toBe('host-gw');
      // The UDP session comes up within a second of the first packet; the stream tunnel
      // carries what goes before it.
      else if (e.fromSite === 'cloud' || e.toSite === 'cloud')
        expect(['udp-direct', 'direct'], where).toContain(e.path);
      else expect(['udp-punched', 'udp-relayed', 'hole-punched', 'relayed'], where).toContain(e.path);
    }
  });

  it('a killed container agent is restarted by podman; its pods keep their IPs and traffic resumes', async () => {
    const victim = 'edge-b-2';
    const name = lab!.agentContainerName(victim);
    const pods = lab!.pods.filter((p) => p.node === victim);
    const cidrsBefore = (await lab!.agentStatus(victim)).podCidrs;
    const previous = lab!.agentProcess(victim)!;
    expect((await inspect(name)).State.Pid).toBe(previous.pid);

    await lab!.killAgent(victim, 'SIGKILL'); // a crash: nobody tells podman
    const restarted = await lab!.waitAgentRestarted(victim, previous);
    expect(restarted.pid).not.toBe(previous.pid);
    expect((await inspect(name)).RestartCount).toBeGreaterThanOrEqual(1);
    const status = await lab!.waitAgentReady(victim, 120_000);
    expect(status.podCidrs).toEqual(cidrsBefore);

    for (const pod of pods) {
      const addr = await lab!.exec(pod.name, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0']);
      expect(addr).toContain(`${pod.ips[0]}/`);
    }
    const target = pods[0]!.ips[0]!;
    const fromEdgeA = lab!.pods.find((p) => p.node === 'edge-a-1')!;
    const fromCloud = lab!.pods.find((p) => p.node === 'cloud-1')!;
    expect(await pingEventually(fromEdgeA.netns, target), 'edge-a-1 pod → edge-b-2 pod').not.toBeNull();
    expect(await pingEventually(fromCloud.netns, target), 'cloud-1 pod → edge-b-2 pod').not.toBeNull();
    expect(await pingEventually(pods[0]!.netns, fromEdgeA.ips[0]!), 'edge-b-2 pod → edge-a-1 pod').not.toBeNull();
  });

  it('takes everything down: no container, namespace, process or rule left', async () => {
    const marks = { prefix: lab!.prefix, dir: lab!.dir, id: lab!.id };
    const report = await lab!.down();
    lab = undefined;
    expect(report.pods).toBe(12);
    expect(await containersLabelled(`io.edgemesh.lab=${marks.id}`)).toEqual([]);
    expectNothingLeft(before, await snapshotHost(), marks);
    await image!.remove();
    expect(await run('podman', ['images', '--format', '{{.Repository}}:{{.Tag}}'])).not.toContain(image!.tag);
    image = undefined;
    // No untagged build leftovers either: podman's storage is as the test found it.
    expect((await imageIds()).filter((id) => !imagesBefore.includes(id))).toEqual([]);
  });
});
