// The agent's view of the Kubernetes API: credentials, its own Node (read + annotate), and
// a Node informer for every peer. Everything else (IPAM blocks) goes through ipam/.
import {
  CoreV1Api,
  type Informer,
  KubeConfig,
  makeInformer,
  type ObjectCache,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
} from '@kubernetes/client-node';

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

  constructor(kubeconfig: KubeConfig) {
    this.kubeconfig = kubeconfig;
    this.core = kubeconfig.makeApiClient(CoreV1Api);
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
}
