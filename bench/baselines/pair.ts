// The comparison bed: two namespaces joined by one veth on TEST-NET-2, the "plain kernel
// routing" limit of this machine, on which wireguard-go and nebula are run as the peers a
// user would pick instead of edgemesh-cni.
import { run } from '../../common/exec.ts';
import { createNetns, deleteNetns } from '../../common/netns.ts';

export interface Scenario {
  name: string;
  /** Namespace the iperf3 client and ping run in. */
  clientNetns: string;
  /** Namespace the iperf3 server runs in. */
  serverNetns: string;
  /** Address the client targets. */
  target: string;
  /** Processes doing the forwarding (for CPU seconds per GB); empty for the kernel. */
  forwarderPids(): number[];
  /**
   * A relay node's process on the path (its CPU also counted on its own), and the name of the
   * thread in it that forwards (its CPU alone: the rest of the process is the node's agent).
   */
  relay?: { pid(): number; thread: string };
  /** Brings the pair onto the path the scenario is named for, before each measurement. */
  prepare?(): Promise<void>;
  /** Starts watching the pair's path; stop() gives the number of changes seen meanwhile. */
  watchPath?(): { stop(): Promise<number> };
}

export interface Pair {
  a: string;
  b: string;
  underlayA: string;
  underlayB: string;
  destroy(): Promise<void>;
}

export async function createPair(prefix: string): Promise<Pair> {
  const a = `${prefix}bench-a`;
  const b = `${prefix}bench-b`;
  const pair: Pair = {
    a,
    b,
    underlayA: '198.51.100.1',
    underlayB: '198.51.100.2',
    destroy: async () => {
      await deleteNetns(a);
      await deleteNetns(b);
    },
  };
  try {
    await createNetns(a);
    await createNetns(b);
    await run('ip', ['-n', a, 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', b]);
    await run('ip', ['-n', a, 'addr', 'add', `${pair.underlayA}/24`, 'dev', 'ul0']);
    await run('ip', ['-n', b, 'addr', 'add', `${pair.underlayB}/24`, 'dev', 'ul0']);
    await run('ip', ['-n', a, 'link', 'set', 'ul0', 'up']);
    await run('ip', ['-n', b, 'link', 'set', 'ul0', 'up']);
    return pair;
  } catch (err) {
    await pair.destroy();
    throw err;
  }
}

export function kernelScenario(pair: Pair): Scenario {
  return {
    name: 'kernel (veth, no tunnel)',
    clientNetns: pair.a,
    serverNetns: pair.b,
    target: pair.underlayB,
    forwarderPids: () => [],
  };
}
