// The agent's view of the Kubernetes API: credentials, its own Node (read + annotate), and
// a Node informer for every peer, an IPAMBlock informer (which pod CIDRs the cluster
// assigns to whom), and Warning Events about peers. Claiming blocks goes through ipam/.
import {
  CoreV1Api,
  CustomObjectsApi,
  type Informer,
  KubeConfig,
  makeInformer,
  type ObjectCache,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
} from '@kubernetes/client-node';
import { IPAM_GROUP, IPAM_PLURAL, IPAM_VERSION, type IpamBlockObject } from '../ipam/node-blocks.ts';

/** A kubeconfig file, or the pod's service account when none is given (DaemonSet). */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromCluster();
  return kc;
}

export class NodeApi {
  readonly kubeconfig: KubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;

  constructor(kubeconfig: KubeConfig) {
    this.kubeconfig = kubeconfig;
    this.core = kubeconfig.makeApiClient(CoreV1Api);
    this.custom = kubeconfig.makeApiClient(CustomObjectsApi);
  }

  readNode(name: string): Promise<V1Node> {
    return this.core.readNode({ name });
  }

  /**
   * Sets (string) or removes (null) annotations on a Node with a JSON merge patch: it
   * touches only these keys, needs no resourceVersion, and so never conflicts with the
   * kubelet updating the same object.
   */
  patchAnnotations(name: string, annotations: Record<string, string | null>): Promise<V1Node> {
    return this.core.patchNode(
      { name, body: { metadata: { annotations } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  /** An informer over all Nodes (list, then watch from its resourceVersion; relists on 410). */
  nodeInformer(): Informer<V1Node> & ObjectCache<V1Node> {
    return makeInformer(this.kubeconfig, '/api/v1/nodes', () => this.core.listNode());
  }

  /** An informer over all IPAMBlocks (cluster-scoped custom resources, deploy/crds/ipamblock.yaml). */
  blockInformer(): Informer<IpamBlockObject> & ObjectCache<IpamBlockObject> {
    return makeInformer<IpamBlockObject>(this.kubeconfig, `/apis/${IPAM_GROUP}/${IPAM_VERSION}/${IPAM_PLURAL}`, () =>
      this.custom.listClusterCustomObject({ group: IPAM_GROUP, version: IPAM_VERSION, plural: IPAM_PLURAL }),
    );
  }

  /** A Warning Event about a Node (shown by `kubectl describe node`), from this agent. */
  async warnAboutNode(node: string, reporter: string, reason: string, message: string): Promise<void> {
    const now = new Date();
    await this.core.createNamespacedEvent({
      namespace: 'default',
      body: {
        metadata: { generateName: `${node}.edgemesh.` },
        involvedObject: { kind: 'Node', apiVersion: 'v1', name: node },
        type: 'Warning',
        reason,
        message,
        source: { component: 'edgemesh-agent', host: reporter },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    });
  }
}
