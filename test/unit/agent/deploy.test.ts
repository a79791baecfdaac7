// The manifests in deploy/ are validated against the Kubernetes API schema (kubernetes-models,
// generated from the API's OpenAPI document; unknown fields, which `kubectl apply` rejects
// under strict field validation, are found with @kubernetes/client-node's models), then
// checked for what a cluster needs of them. (`kubectl apply --dry-run=client` needs an API
// server for discovery even in client mode, so it cannot run offline.) The lab's container
// mode derives podman's arguments from the DaemonSet: that mapping is checked here too.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { ValidatingAdmissionPolicy } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy';
import { ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { agentConfigSchema, parseConfigYaml } from '../../../agent/config.ts';
import { parseConfig } from '../../../common/config.ts';
import { type NodeBinding, podmanRunArgs, quantityBytes, readAgentContract } from '../../../lab/agent-container.ts';

const DEPLOY = join(import.meta.dirname, '../../../deploy');
const REPO = join(import.meta.dirname, '../../..');

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };

function loadAll(): Obj[] {
  const files = [
    ...readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml')),
    ...readdirSync(join(DEPLOY, 'crds')).map((f) => join('crds', f)),
  ];
  return files.flatMap((f) =>
    parseAllDocuments(readFileSync(join(DEPLOY, f), 'utf8')).map((doc) => {
      expect(doc.errors, `${f}: ${doc.errors.join('; ')}`).toEqual([]);
      return doc.toJS() as Obj;
    }),
  );
}

const objects = loadAll();
const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
// biome-ignore lint/suspicious/noExplicitAny: manifests are free-form JSON
const one = (kind: string): any => {
  const found = byKind(kind);
  expect(found, kind).toHaveLength(1);
  return found[0];
};

/** The schema model of each kind deploy/ ships (a new kind must be added here to be validated). */
const MODELS: Record<string, { validate(o: Obj): void; clientType: string }> = {
  'v1/ServiceAccount': { validate: (o) => new ServiceAccount(o as never).validate(), clientType: 'V1ServiceAccount' },
  'v1/ConfigMap': { validate: (o) => new ConfigMap(o as never).validate(), clientType: 'V1ConfigMap' },
  'apps/v1/DaemonSet': { validate: (o) => new DaemonSet(o as never).validate(), clientType: 'V1DaemonSet' },
  'rbac.authorization.k8s.io/v1/ClusterRole': {
    validate: (o) => new ClusterRole(o as never).validate(),
    clientType: 'V1ClusterRole',
  },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': {
    validate: (o) => new ClusterRoleBinding(o as never).validate(),
    clientType: 'V1ClusterRoleBinding',
  },
  'apiextensions.k8s.io/v1/CustomResourceDefinition': {
    validate: (o) => new CustomResourceDefinition(o as never).validate(),
    clientType: 'V1CustomResourceDefinition',
  },
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': {
    validate: (o) => new ValidatingAdmissionPolicy(o as never).validate(),
    clientType: 'V1ValidatingAdmissionPolicy',
  },
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': {
    validate: (o) => new ValidatingAdmissionPolicyBinding(o as never).validate(),
    clientType: 'V1ValidatingAdmissionPolicyBinding',
  },
};

type AttributeMap = Array<{ baseName: string; type: string }>;
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttributeMap }>;

/** Fields the API does not know (a typo such as `mountPropogation`), as JSON paths. */
function unknownFields(value: unknown, type: string, path: string, out: string[] = []): string[] {
  if (value === null || value === undefined) return out;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    for (const [i, v] of (value as unknown[]).entries()) unknownFields(v, array[1]!, `${path}[${i}]`, out);
    return out;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(value as object)) unknownFields(v, map[1]!, `${path}.${k}`, out);
    return out;
  }
  const attrs = models[type]?.getAttributeTypeMap?.();
  if (!attrs) return out; // a scalar, IntOrString or free-form JSON
  for (const [k, v] of Object.entries(value as object)) {
    const a = attrs.find((x) => x.baseName === k);
    if (!a) out.push(`${path}.${k}`);
    else unknownFields(v, a.type, `${path}.${k}`, out);
  }
  return out;
}

describe('deploy/ manifests', () => {
  it('every object is valid against the Kubernetes API schema, with no unknown field', () => {
    for (const o of objects) {
      const model = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(model, `${o.apiVersion} ${o.kind}: no schema model in this test`).toBeDefined();
      expect(() => model!.validate(o), `${o.kind}/${o.metadata.name}`).not.toThrow();
      expect(unknownFields(o, model!.clientType, o.kind), `${o.kind}/${o.metadata.name}`).toEqual([]);
    }
  });

  it('the schema check catches what a cluster would refuse', () => {
    const ds = structuredClone(one('DaemonSet'));
    ds.spec.template.spec.containers[0].volumeMounts[0].mountPropagation = 'HostToContainr';
    expect(() => MODELS['apps/v1/DaemonSet']!.validate(ds)).toThrow(/mountPropagation/);
    const typo = structuredClone(one('DaemonSet'));
    typo.spec.template.spec.containers[0].securityContext.privilged = true;
    expect(unknownFields(typo, 'V1DaemonSet', 'DaemonSet')).toEqual([
      'DaemonSet.spec.template.spec.containers[0].securityContext.privilged',
    ]);
    const noSelector = structuredClone(one('DaemonSet'));
    delete noSelector.spec.selector;
    expect(() => MODELS['apps/v1/DaemonSet']!.validate(noSelector)).toThrow(/selector/);
  });

  it('every object has apiVersion, kind and a DNS-1123 name; namespaced ones live in kube-system', () => {
    expect(objects.length).toBeGreaterThanOrEqual(6);
    const clusterScoped = new Set([
      'ClusterRole',
      'ClusterRoleBinding',
      'CustomResourceDefinition',
      'Namespace',
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
    ]);
    for (const o of objects) {
      expect(o.apiVersion, JSON.stringify(o.metadata)).toMatch(/^([a-z0-9.-]+\/)?v\d+(alpha\d+|beta\d+)?$/);
      expect(o.kind).toMatch(/^[A-Z][A-Za-z]+$/);
      expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
      if (clusterScoped.has(o.kind)) expect(o.metadata.namespace).toBeUndefined();
      else expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('kube-system');
    }
  });

  it('RBAC grants exactly what the agent uses, to the DaemonSet service account', () => {
    const role = one('ClusterRole');
    const rules = role.rules as Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>;
    const grant = (group: string, resource: string) =>
      rules
        .filter((r) => r.apiGroups.includes(group) && r.resources.includes(resource))
        .flatMap((r) => r.verbs)
        .sort();
    expect(grant('', 'nodes')).toEqual(['get', 'list', 'patch', 'watch']);
    expect(grant('', 'nodes/status')).toEqual(['patch']);
    expect(grant('edgemesh.io', 'ipamblocks')).toEqual(['create', 'delete', 'get', 'list', 'patch', 'watch']);
    expect(grant('', 'events')).toEqual(['create']);
    // Least privilege: no wildcards, nothing on secrets, pods or configmaps.
    for (const r of rules) {
      expect(r.verbs).not.toContain('*');
      expect(r.resources).not.toContain('*');
      for (const res of ['secrets', 'pods', 'configmaps']) expect(r.resources).not.toContain(res);
    }
    const binding = one('ClusterRoleBinding');
    const sa = one('ServiceAccount');
    expect(binding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'ClusterRole',
      name: role.metadata.name,
    });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: 'kube-system' }]);
    expect(one('DaemonSet').spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
    // RBAC cannot name the agent's own Node: the admission policy narrows it to that, for
    // this service account (its rules: test/unit/agent/admission-policy.test.ts).
    const policy = one('ValidatingAdmissionPolicy');
    expect(policy.spec.matchConditions[0].expression).toContain(
      `system:serviceaccount:kube-system:${sa.metadata.name}`,
    );
  });

  it('the DaemonSet runs a privileged host-network agent on every node with its host paths', () => {
    const ds = one('DaemonSet');
    expect(ds.apiVersion).toBe('apps/v1');
    const pod = ds.spec.template.spec;
    expect(ds.spec.selector.matchLabels).toEqual(ds.metadata.labels);
    expect(ds.spec.template.metadata.labels).toMatchObject(ds.spec.selector.matchLabels);
    expect(pod.hostNetwork).toBe(true);
    expect(pod.tolerations).toContainEqual({ operator: 'Exists' });
    const [agent] = pod.containers;
    expect(agent.securityContext.privileged).toBe(true);
    expect(agent.command).toEqual([
      'node',
      '/app/bin/edgemesh-cni.js',
      'agent',
      '--config',
      '/etc/edgemesh/agent.yaml',
    ]);
    expect(agent.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    const volumes = new Map<string, { hostPath?: { path: string }; configMap?: { name: string } }>(
      pod.volumes.map((v: { name: string }) => [v.name, v]),
    );
    const mounts = new Map<string, string>(
      agent.volumeMounts.map((m: { name: string; mountPath: string }) => [m.mountPath, m.name]),
    );
    // Every mount has a volume; the host paths the agent writes are the ones in its config.
    for (const name of mounts.values()) expect(volumes.has(name), name).toBe(true);
    const hostPathAt = (mountPath: string) => volumes.get(mounts.get(mountPath)!)?.hostPath?.path;
    expect(hostPathAt('/dev/net/tun')).toBe('/dev/net/tun');
    const cm = one('ConfigMap');
    expect(volumes.get(mounts.get('/etc/edgemesh')!)?.configMap?.name).toBe(cm.metadata.name);
    const cfg = parseConfig(
      agentConfigSchema,
      { ...parseConfigYaml(cm.data['agent.yaml'], 'ConfigMap agent.yaml'), nodeName: 'node-1' },
      'ConfigMap agent.yaml',
    );
    for (const dir of Object.values(cfg.paths)) expect(hostPathAt(dir), dir).toBe(dir);
    // Probes and ports match the agent's HTTP listener.
    const httpPort = Number(cfg.http.listen.split(':').pop());
    // Loopback only (hostNetwork: 0.0.0.0 would serve every network the node is on); the
    // kubelet, on the same host, probes 127.0.0.1.
    expect(cfg.http.listen).toBe(`127.0.0.1:${httpPort}`);
    expect(agent.livenessProbe.httpGet).toEqual({ host: '127.0.0.1', path: '/healthz', port: httpPort });
    expect(agent.readinessProbe.httpGet).toEqual({ host: '127.0.0.1', path: '/readyz', port: httpPort });
    const overlayPort = Number(/\/tcp\/(\d+)/.exec(cfg.overlay.listen[0]!)![1]);
    const ports = agent.ports.map((p: { containerPort: number }) => p.containerPort);
    expect(ports).toEqual(expect.arrayContaining([httpPort, overlayPort]));
    // No cluster-wide punch port: two nodes behind one NAT cannot both keep one port.
    expect(cfg.overlay.punchPort).toBeUndefined();
  });

  it('the ConfigMap leaves per-node facts to the node (site, node IP, relay come from the Node)', () => {
    const cfg = parseConfigYaml(one('ConfigMap').data['agent.yaml'], 'ConfigMap');
    expect(cfg.nodeName).toBeUndefined();
    expect(cfg.site).toBeUndefined();
    expect(cfg.nodeIp).toBeUndefined();
    expect(cfg.relay).toBeUndefined();
    expect(cfg.kubeconfig).toBeUndefined();
  });

  it('the IPAMBlock CRD is served as the agent claims it', () => {
    const crd = one('CustomResourceDefinition');
    expect(crd.spec.group).toBe('edgemesh.io');
    expect(crd.spec.scope).toBe('Cluster');
    expect(crd.spec.names.plural).toBe('ipamblocks');
    expect(crd.spec.versions.some((v: { served: boolean; storage: boolean }) => v.served && v.storage)).toBe(true);
  });

  it("the Dockerfile builds FROM scratch on scripts/image.sh's tree and runs the DaemonSet's command", () => {
    const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
    // No base image from a registry: the root filesystem is the build context.
    expect([...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1])).toEqual(['scratch']);
    const exec = (instr: string) => JSON.parse(new RegExp(`^${instr} (\\[.*\\])$`, 'm').exec(dockerfile)![1]!);
    const agent = one('DaemonSet').spec.template.spec.containers[0];
    // `docker run IMAGE` and the DaemonSet start the same program with the same flags.
    expect([...exec('ENTRYPOINT'), ...exec('CMD')]).toEqual([...agent.command, ...(agent.args ?? [])]);
    // The image carries every directory the CLI imports at run time, and the tools the agent runs.
    const script = readFileSync(join(REPO, 'scripts/image.sh'), 'utf8');
    const dirs = /for d in ([a-z ]+); do/.exec(script)![1]!.split(' ');
    for (const dir of ['bin', 'common', 'agent', 'cni', 'dataplane', 'ipam', 'overlay', 'lab', 'bench']) {
      expect(dirs).toContain(dir);
    }
    // The agent's bundle and what tells it is current: the manifest, and every input's time.
    expect(script).toMatch(/xargs -0 cp -p --parents/);
    expect(script).toMatch(/cp -p --parents scripts\/build-agent.mjs/);
    for (const pkg of ['iproute2', 'iptables', 'util-linux', 'libstdc++6']) expect(script).toContain(pkg);
    expect(script).toMatch(
      /cp -p build\/edgemesh_tun.node build\/edgemesh build\/agent.js .*\n.*build\/agent.inputs.json/,
    );
  });

  it("the DaemonSet's image is the one `npm run image` builds, not an image nobody publishes", () => {
    const image: string = one('DaemonSet').spec.template.spec.containers[0].image;
    const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(image).toBe(`localhost/edgemesh-cni:${version}`);
    const install = readFileSync(join(REPO, 'docs/install.md'), 'utf8');
    expect(install).not.toMatch(/ghcr\.io|the published/);
    expect(install).toContain(image);
    expect(install).toContain('npm run image');
  });
});

describe("the lab's container mode follows the DaemonSet", () => {
  const text = readFileSync(join(DEPLOY, 'daemonset.yaml'), 'utf8');
  const contract = readAgentContract(text);
  const binding: NodeBinding = {
    containerName: 'lab-agent-n1',
    image: 'localhost/edgemesh-cni:test',
    netnsPath: '/run/netns/lab-n1',
    fields: { 'spec.nodeName': 'n1' },
    hostPaths: { '/run/edgemesh': '/lab/n1/run', '/opt/cni/bin': '/lab/n1/cni/bin' },
    configMaps: { 'edgemesh-config': '/lab/n1/config' },
    logPath: '/lab/n1/agent.log',
  };
  const args = podmanRunArgs(contract, binding);
  const values = (flag: string) => args.flatMap((a, i) => (args[i - 1] === flag ? [a] : []));

  it('host network = the node namespace, privileged, restart always, grace period, memory limit', () => {
    expect(values('--network')).toEqual(['ns:/run/netns/lab-n1']);
    expect(args).toContain('--privileged');
    expect(values('--restart')).toEqual(['always']);
    expect(values('--stop-timeout')).toEqual(['30']);
    expect(values('--memory')).toEqual([`${512 * 1024 * 1024}b`]);
    expect(values('--env')).toEqual(['NODE_NAME=n1', 'EDGEMESH_LOG_LEVEL=info']);
    expect(JSON.parse(values('--entrypoint')[0]!)).toEqual(contract.command);
    expect(args.at(-1)).toBe('localhost/edgemesh-cni:test');
  });

  it("mounts every volume with its propagation; the node's directories keep host path = container path", () => {
    const mounts = values('--mount');
    expect(mounts).toHaveLength(one('DaemonSet').spec.template.spec.containers[0].volumeMounts.length);
    expect(mounts).toContain('type=bind,src=/var/run/netns,dst=/var/run/netns,bind-propagation=rslave');
    expect(mounts).toContain('type=bind,src=/lab/n1/run,dst=/lab/n1/run,bind-propagation=rprivate');
    expect(mounts).toContain('type=bind,src=/lab/n1/cni/bin,dst=/lab/n1/cni/bin,bind-propagation=rprivate');
    expect(mounts).toContain('type=bind,src=/run/xtables.lock,dst=/run/xtables.lock,bind-propagation=rprivate');
    expect(mounts).toContain('type=bind,src=/lab/n1/config,dst=/etc/edgemesh,bind-propagation=rprivate,ro=true');
  });

  it('refuses what it cannot give: no host network, an unknown field reference, a volume type', () => {
    expect(() => readAgentContract(text.replace('hostNetwork: true', 'hostNetwork: false'))).toThrow(/hostNetwork/);
    expect(() =>
      podmanRunArgs(readAgentContract(text.replace('spec.nodeName', 'spec.schedulerName')), binding),
    ).toThrow(/spec.schedulerName/);
    expect(() => readAgentContract(text.replace('configMap: { name: edgemesh-config }', 'emptyDir: {}'))).toThrow(
      /only hostPath and configMap/,
    );
    expect(quantityBytes('512Mi')).toBe(536870912);
    expect(quantityBytes('1G')).toBe(1e9);
    expect(() => quantityBytes('1.5Gi')).toThrow(/unsupported/);
  });
});
