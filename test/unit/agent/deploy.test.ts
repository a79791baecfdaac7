// The manifests in deploy/ are parsed and checked for what a cluster needs of them.
// (`kubectl apply --dry-run=client` needs an API server for discovery even in client mode,
// so it cannot run offline; these checks are the CI gate instead.)
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { agentConfigSchema, parseConfigYaml } from '../../../agent/config.ts';
import { parseConfig } from '../../../common/config.ts';

const DEPLOY = join(import.meta.dirname, '../../../deploy');

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

describe('deploy/ manifests', () => {
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
    expect(ports).toEqual(expect.arrayContaining([httpPort, overlayPort, cfg.overlay.punchPort]));
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

  it('the Dockerfile builds on a Node 24 slim image and runs the CLI', () => {
    const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
    const froms = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    expect(froms.length).toBeGreaterThan(0);
    for (const image of froms) expect(image).toBe('node:24-slim');
    expect(dockerfile).toMatch(/iproute2/);
    expect(dockerfile).toMatch(/iptables/);
    expect(dockerfile).toMatch(/ENTRYPOINT \["node", "\/app\/bin\/edgemesh-cni.js"\]/);
    // Every directory the CLI imports at run time is in the image.
    for (const dir of ['bin', 'common', 'agent', 'cni', 'dataplane', 'ipam', 'overlay', 'build']) {
      expect(dockerfile).toMatch(new RegExp(`COPY (--from=build /app/${dir}|${dir}) `));
    }
  });
});
