// The agent's view of the Kubernetes API: credentials, its own Node (read + annotate), and
// a Node informer for every peer, an IPAMBlock informer (which pod CIDRs the cluster
// assigns to whom), and Warning Events about peers. Claiming blocks goes through ipam/.
import type { Informer, ObjectCache, V1Node } from '@kubernetes/client-node';
import { KubeClient, KubeConfig, LIST_PAGE, ListWatch, MergePatch, Watch } from '../common/kube/client.ts';
import { IPAM_GROUP, IPAM_PLURAL, IPAM_VERSION, type IpamBlockObject } from '../ipam/node-blocks.ts';
import { ANNOTATION_PREFIX } from '../overlay/annotations.ts';

/** A kubeconfig file, or the pod's service account when none is given (DaemonSet). */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromCluster();
  return kc;
}

/** A watch event's object: an API Status on ERROR events. */
interface WatchStatus {
  code?: number;
  message?: string;
  details?: { causes?: Array<{ reason?: string }> };
}

/**
 * A watch from a resourceVersion the server has not reached: it answers with an ERROR event,
 * Status 504 "Too large resource version" (cause ResourceVersionTooLarge), and ends the watch.
 */
function isTooLargeResourceVersion(obj: WatchStatus | undefined): boolean {
  return (
    obj?.code === 504 &&
    (obj.details?.causes?.some((c) => c.reason === 'ResourceVersionTooLarge') === true ||
      /too large resource version/i.test(obj.message ?? ''))
  );
}

/**
 * client-node's Watch for a ListWatch, with each event's object passed through `map`, and a
 * "too large resource version" passed on as 410 Gone. ListWatch relists only on 410; an API
 * server whose resourceVersions went back (an etcd restored from a backup, a fresh server)
 * answers its next watch with 504 instead, which ListWatch ignores and watches again from the
 * same version, for ever, with no error to see. Relisting is what client-go's reflector does.
 */
function relistingWatch(kubeconfig: KubeConfig, map: (phase: string, obj: unknown) => unknown = (_, o) => o): Watch {
  const watch = new Watch(kubeconfig);
  return {
    watch: (path: string, query: Parameters<Watch['watch']>[1], onEvent: WatchCallback, done: (err: unknown) => void) =>
      watch.watch(
        path,
        query,
        (phase, obj, raw) => {
          if (phase === 'ERROR' && isTooLargeResourceVersion(obj as WatchStatus)) {
            onEvent(phase, { ...(obj as WatchStatus), code: 410 }, raw);
            return;
          }
          onEvent(phase, map(phase, obj), raw);
        },
        done,
      ),
  } as Watch;
}

export class NodeApi {
  readonly kubeconfig: KubeConfig;
  readonly client: KubeClient;

  constructor(kubeconfig: KubeConfig) {
    this.kubeconfig = kubeconfig;
    this.client = new KubeClient(kubeconfig);
  }

  readNode(name: string): Promise<V1Node> {
    return this.client.request<V1Node>('GET', `/api/v1/nodes/${encodeURIComponent(name)}`);
  }

  /**
   * Sets (string) or removes (null) annotations on a Node with a JSON merge patch: it
   * touches only these keys, needs no resourceVersion, and so never conflicts with the
   * kubelet updating the same object.
   */
  patchAnnotations(name: string, annotations: Record<string, string | null>): Promise<V1Node> {
    return this.client.request<V1Node>('PATCH', `/api/v1/nodes/${encodeURIComponent(name)}`, {
      body: { metadata: { annotations } },
      contentType: MergePatch,
    });
  }

  /**
   * An informer over all Nodes (list, then watch from its resourceVersion; relists on 410 and
   * on a resourceVersion the server has not reached, see relistingWatch)
   * whose cache and events hold trimmed Nodes (trimNode): every agent caches every Node.
   */
  nodeInformer(): Informer<V1Node> & ObjectCache<V1Node> {
    const trimming = relistingWatch(this.kubeconfig, (phase, obj) =>
      phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? trimNode(obj as V1Node) : obj,
    );
    return new ListWatch<V1Node>(
      '/api/v1/nodes',
      trimming,
      async () => {
        // In pages: a 5,000-node list in one response is tens of MB of JSON and objects at once.
        const list = (query: Record<string, string | number | undefined>) =>
          this.client.request<NodeListJson>('GET', '/api/v1/nodes', { query });
        const first = await list({ limit: LIST_PAGE });
        const items = first.items.map(trimNode);
        for (let next = first.metadata?.continue; next; ) {
          const page = await list({ limit: LIST_PAGE, continue: next });
          for (const node of page.items) items.push(trimNode(node));
          next = page.metadata?.continue;
        }
        first.items = items; // every page is the snapshot at the first page's resourceVersion
        return first;
      },
      false,
    );
  }

  /** An informer over all IPAMBlocks (cluster-scoped custom resources, deploy/crds/ipamblock.yaml). */
  blockInformer(): Informer<IpamBlockObject> & ObjectCache<IpamBlockObject> {
    const path = `/apis/${IPAM_GROUP}/${IPAM_VERSION}/${IPAM_PLURAL}`;
    return new ListWatch<IpamBlockObject>(
      path,
      relistingWatch(this.kubeconfig),
      () => this.client.request<{ metadata?: { resourceVersion?: string }; items: IpamBlockObject[] }>('GET', path),
      false,
    );
  }

  /** A Warning Event about a Node (shown by `kubectl describe node`), from this agent. */
  async warnAboutNode(node: string, reporter: string, reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    await this.client.request('POST', '/api/v1/namespaces/default/events', {
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

/** A NodeList as the API server sends it (client-node's V1NodeList names `continue` `_continue`). */
interface NodeListJson {
  apiVersion?: string;
  kind?: string;
  metadata?: { resourceVersion?: string; continue?: string };
  items: V1Node[];
}

type WatchCallback = (phase: string, obj: unknown, raw: unknown) => void;

/**
 * The part of a Node an agent reads: name, uid, resourceVersion, deletion time, its
 * edgemesh.io/ labels and annotations (overlay/annotations.ts), its pod CIDRs and its
 * Internal/External IPs. The rest — image lists, conditions, nodeInfo, capacity,
 * managedFields, other controllers' labels and annotations — is most of a kubelet's Node
 * (often 10 KB and more) and is dropped before it is cached, so a 5,000-node cluster costs
 * each agent less.
 */
export function trimNode(node: V1Node): V1Node {
  const m = node.metadata ?? {};
  const labels = ours(m.labels);
  const annotations = ours(m.annotations);
  const trimmed: V1Node = {
    metadata: {
      ...(m.name !== undefined ? { name: m.name } : {}),
      ...(m.uid !== undefined ? { uid: m.uid } : {}),
      ...(m.resourceVersion !== undefined ? { resourceVersion: m.resourceVersion } : {}),
      ...(labels ? { labels } : {}),
      ...(annotations ? { annotations } : {}),
      ...(m.deletionTimestamp ? { deletionTimestamp: m.deletionTimestamp } : {}),
    },
  };
  const spec = node.spec;
  if (spec && (spec.podCIDR !== undefined || spec.podCIDRs !== undefined)) {
    trimmed.spec = {
      ...(spec.podCIDR !== undefined ? { podCIDR: spec.podCIDR } : {}),
      ...(spec.podCIDRs !== undefined ? { podCIDRs: spec.podCIDRs } : {}),
    };
  }
  const addresses = node.status?.addresses;
  if (Array.isArray(addresses))
    trimmed.status = { addresses: addresses.filter((a) => a?.type === 'InternalIP' || a?.type === 'ExternalIP') };
  return trimmed;
}

/** The edgemesh.io/ entries of a label or annotation map; undefined when it has none. */
function ours(map: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!map || typeof map !== 'object') return undefined;
  let kept: Record<string, string> | undefined;
  for (const key of Object.keys(map)) {
    if (!key.startsWith(ANNOTATION_PREFIX)) continue;
    kept ??= {};
    kept[key] = map[key] as string;
  }
  return kept;
}
