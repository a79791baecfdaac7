// The lab's container mode: a node's agent runs from the agent image under podman with the
// container contract of deploy/daemonset.yaml, read from that file itself so the lab and the
// manifest cannot drift: host network (the node's namespace), privileged, command, env
// (downward-API fields filled as the kubelet would), every volume with its mount propagation,
// the restart policy, the grace period and the memory limit.
//
// Host paths: the lab's nodes share one machine, so each node's own directories replace the
// DaemonSet's hostPath roots (/opt/cni/bin → <lab>/nodes/<node>/cni/bin ...). Where the
// DaemonSet mounts a host path at the same path in the container (all of the agent's own
// directories), the relocated directory is mounted at its relocated path too: the agent
// hands those paths to the runtime on the host (the conflist names the CNI socket by path),
// so "container path = host path" is part of the contract, and the lab keeps it.
//
// Not mapped: probes (podman 4 runs health checks from systemd timers; the lab's readiness
// wait asks the agent's /status instead) and ports (host network: the agent listens in the
// node's namespace, there is nothing to publish).
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { tryRun } from '../common/exec.ts';
import { REPO_ROOT } from './state.ts';

export const DAEMONSET_PATH = join(REPO_ROOT, 'deploy/daemonset.yaml');

type Propagation = 'rprivate' | 'rslave' | 'rshared';

export interface ContractMount {
  volume: string;
  mountPath: string;
  readOnly: boolean;
  /** Kubernetes None / HostToContainer / Bidirectional in OCI terms. */
  propagation: Propagation;
  source: { hostPath: string; type: string } | { configMap: string };
}

export type ContractEnv = { name: string; value: string } | { name: string; fieldPath: string };

/** What the DaemonSet asks of the agent's container, in runtime-neutral terms. */
export interface AgentContainerContract {
  containerName: string;
  image: string;
  command: string[];
  args: string[];
  env: ContractEnv[];
  hostNetwork: true;
  privileged: boolean;
  mounts: ContractMount[];
  restartPolicy: 'Always' | 'OnFailure' | 'Never';
  terminationGracePeriodSeconds: number;
  memoryLimitBytes?: number;
}

const PROPAGATION: Record<string, Propagation> = {
  None: 'rprivate',
  HostToContainer: 'rslave',
  Bidirectional: 'rshared',
};

const QUANTITY_UNITS: Record<string, number> = {
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
};

/** A Kubernetes memory quantity ("512Mi", "1G", "1048576") in bytes. */
export function quantityBytes(q: string | number): number {
  const m = /^(\d+)(k|M|G|Ki|Mi|Gi)?$/.exec(String(q));
  if (!m) throw new Error(`unsupported memory quantity "${q}" (expected e.g. 512Mi, 1Gi, 1048576)`);
  return Number(m[1]) * QUANTITY_UNITS[m[2] ?? '']!;
}

// biome-ignore lint/suspicious/noExplicitAny: walking untyped YAML with explicit checks below
type Any = any;

function need<T>(value: T | undefined | null, what: string): T {
  if (value === undefined || value === null) throw new Error(`deploy/daemonset.yaml: ${what} is missing`);
  return value;
}

/** Reads the agent container's contract from the DaemonSet manifest text. */
export function readAgentContract(yamlText: string, source = 'deploy/daemonset.yaml'): AgentContainerContract {
  const docs = parseAllDocuments(yamlText).map((d) => {
    if (d.errors.length) throw new Error(`${source}: ${d.errors.join('; ')}`);
    return d.toJS() as Any;
  });
  const ds = docs.find((d) => d?.kind === 'DaemonSet');
  if (!ds) throw new Error(`${source}: no DaemonSet`);
  const pod = need(ds.spec?.template?.spec, 'spec.template.spec');
  if (pod.hostNetwork !== true)
    throw new Error(`${source}: the agent must run with hostNetwork: true (it owns the node's routes)`);
  const containers: Any[] = need(pod.containers, 'spec.template.spec.containers');
  const c = containers.find((x) => x.name === 'agent') ?? containers[0];
  if (!c) throw new Error(`${source}: no container`);
  const volumes = new Map<string, Any>((pod.volumes ?? []).map((v: Any) => [v.name, v]));
  const mounts: ContractMount[] = (c.volumeMounts ?? []).map((m: Any): ContractMount => {
    const v = volumes.get(m.name);
    if (!v) throw new Error(`${source}: volumeMount ${m.name} has no volume`);
    const propagation = PROPAGATION[m.mountPropagation ?? 'None'];
    if (!propagation) throw new Error(`${source}: mountPropagation ${m.mountPropagation} of ${m.name} is unknown`);
    let src: ContractMount['source'];
    if (v.hostPath)
      src = { hostPath: need(v.hostPath.path, `volume ${v.name} hostPath.path`), type: v.hostPath.type ?? '' };
    else if (v.configMap) src = { configMap: need(v.configMap.name, `volume ${v.name} configMap.name`) };
    else throw new Error(`${source}: volume ${v.name}: only hostPath and configMap volumes are supported by the lab`);
    return { volume: m.name, mountPath: m.mountPath, readOnly: m.readOnly === true, propagation, source: src };
  });
  const env: ContractEnv[] = (c.env ?? []).map((e: Any): ContractEnv => {
    if (typeof e.value === 'string') return { name: e.name, value: e.value };
    const fieldPath = e.valueFrom?.fieldRef?.fieldPath;
    if (typeof fieldPath === 'string') return { name: e.name, fieldPath };
    throw new Error(`${source}: env ${e.name}: only value and valueFrom.fieldRef are supported by the lab`);
  });
  const memory = c.resources?.limits?.memory;
  return {
    containerName: c.name,
    image: need(c.image, 'the container image'),
    command: c.command ?? [],
    args: c.args ?? [],
    env,
    hostNetwork: true,
    privileged: c.securityContext?.privileged === true,
    mounts,
    restartPolicy: pod.restartPolicy ?? 'Always', // a DaemonSet allows only Always
    terminationGracePeriodSeconds: pod.terminationGracePeriodSeconds ?? 30, // the API default
    ...(memory === undefined ? {} : { memoryLimitBytes: quantityBytes(memory) }),
  };
}

export function loadAgentContract(path = DAEMONSET_PATH): AgentContainerContract {
  return readAgentContract(readFileSync(path, 'utf8'), path);
}

/** What the lab supplies for one node: where things are on this machine. */
export interface NodeBinding {
  containerName: string;
  image: string;
  /** The node's network namespace: the agent's "host network". */
  netnsPath: string;
  /** Downward-API fields (spec.nodeName, status.hostIP, ...). */
  fields: Record<string, string>;
  /** DaemonSet hostPath → this node's directory (roots not listed stay as they are). */
  hostPaths: Record<string, string>;
  /** ConfigMap name → a directory holding its keys as files. */
  configMaps: Record<string, string>;
  /** The container's stdout/stderr (k8s-file format, as the kubelet keeps pod logs). */
  logPath: string;
  labels?: Record<string, string>;
  /** Flags this machine needs whatever the contract says (runtime, rlimits). */
  runtimeFlags?: string[];
}

/** A hostPath volume's path on the host and in the container, for one node. */
export function hostPathMount(m: ContractMount & { source: { hostPath: string } }, b: NodeBinding) {
  const relocated = b.hostPaths[m.source.hostPath];
  const host = relocated ?? m.source.hostPath;
  const container = relocated !== undefined && m.mountPath === m.source.hostPath ? relocated : m.mountPath;
  return { host, container };
}

/** `podman run` arguments that give one node's agent the DaemonSet's container contract. */
export function podmanRunArgs(contract: AgentContainerContract, b: NodeBinding): string[] {
  const args = ['run', '--detach', '--replace', '--pull', 'never', '--name', b.containerName];
  args.push('--network', `ns:${b.netnsPath}`);
  if (contract.privileged) args.push('--privileged');
  const restart = { Always: 'always', OnFailure: 'on-failure', Never: 'no' }[contract.restartPolicy];
  args.push('--restart', restart, '--stop-timeout', String(contract.terminationGracePeriodSeconds));
  if (contract.memoryLimitBytes !== undefined) args.push('--memory', `${contract.memoryLimitBytes}b`);
  for (const e of contract.env) {
    if ('value' in e) args.push('--env', `${e.name}=${e.value}`);
    else {
      const v = b.fields[e.fieldPath];
      if (v === undefined) throw new Error(`env ${e.name}: the lab has no value for field ${e.fieldPath}`);
      args.push('--env', `${e.name}=${v}`);
    }
  }
  for (const m of contract.mounts) {
    let host: string;
    let container: string;
    if ('configMap' in m.source) {
      host = b.configMaps[m.source.configMap] ?? '';
      if (!host) throw new Error(`volume ${m.volume}: the lab has no directory for ConfigMap ${m.source.configMap}`);
      container = m.mountPath;
    } else ({ host, container } = hostPathMount(m as ContractMount & { source: { hostPath: string } }, b));
    const opts = [`type=bind`, `src=${host}`, `dst=${container}`, `bind-propagation=${m.propagation}`];
    if (m.readOnly) opts.push('ro=true');
    args.push('--mount', opts.join(','));
  }
  for (const [k, v] of Object.entries(b.labels ?? {})) args.push('--label', `${k}=${v}`);
  args.push('--log-driver', 'k8s-file', '--log-opt', `path=${b.logPath}`);
  args.push(...(b.runtimeFlags ?? []));
  if (contract.command.length) args.push('--entrypoint', JSON.stringify(contract.command));
  args.push(b.image, ...contract.args);
  return args;
}

/**
 * What the kubelet checks before it starts the pod: hostPath types (creating the
 * ...OrCreate ones). A missing Directory/CharDevice/File is an error, as it is on a node.
 */
export async function prepareHostPaths(contract: AgentContainerContract, b: NodeBinding): Promise<void> {
  for (const m of contract.mounts) {
    if (!('hostPath' in m.source)) continue;
    const { host } = hostPathMount(m as ContractMount & { source: { hostPath: string } }, b);
    const type = m.source.type;
    if (type === 'DirectoryOrCreate') await mkdir(host, { recursive: true, mode: 0o755 });
    else if (type === 'FileOrCreate') {
      if (!existsSync(host)) {
        await mkdir(dirname(host), { recursive: true });
        await writeFile(host, '', { mode: 0o644, flag: 'a' });
      }
    } else if (type !== '' && !existsSync(host))
      throw new Error(`hostPath ${host} (volume ${m.volume}, type ${type}) does not exist on this machine`);
  }
}

/**
 * rlimits podman can hand to runc here. Podman asks for nofile 1048576 and nproc 4194304 by
 * default; where root lacks CAP_SYS_RESOURCE (as in this lab's machines) runc cannot raise
 * a limit above its parent's and every start fails ("error setting rlimit"). The ceilings
 * podman's own processes run with are the current hard limits, nproc also capped at pid_max.
 */
export function podmanRlimitFlags(): string[] {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const hard = (label: string): number | undefined => {
    const m = new RegExp(`^${label}\\s+\\S+\\s+(\\S+)`, 'm').exec(limits);
    return m && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
  };
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim());
  const nofile = hard('Max open files') ?? 1048576;
  const nproc = Math.min(hard('Max processes') ?? pidMax, pidMax);
  return ['--ulimit', `nofile=${nofile}:${nofile}`, '--ulimit', `nproc=${nproc}:${nproc}`];
}

/** Before a container lab builds anything: podman, runc and the image are here. */
export async function checkContainerTools(image: string): Promise<void> {
  for (const tool of ['podman', 'runc']) {
    if (!(await tryRun(tool, ['--version'])))
      throw new Error(`lab up --containers needs ${tool}: apt-get install podman runc (scripts/setup.sh does)`);
  }
  if (!(await tryRun('podman', ['image', 'exists', image])))
    throw new Error(`the agent image ${image} is not in podman's storage: build it with \`npm run image\``);
}
