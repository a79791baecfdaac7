// The proxy clients client-node's KubeConfig uses for a cluster with a `proxy-url`
// (socks-proxy-agent, socks, hpagent), loaded the first time a kubeconfig names a proxy.
// KubeConfig's module imports them when it loads, with the packages under them (agent-base,
// ip-address, smart-buffer, debug), and an agent that talks to its API server directly never
// uses them. KubeConfig builds agents synchronously, so the packages come in by require(),
// which loads an ES module synchronously too (Node ≥ 22.12).
import { createRequire } from 'node:module';
import type * as Hpagent from 'hpagent';
import type * as Socks from 'socks';
import type * as SocksProxy from 'socks-proxy-agent';

const require = createRequire(import.meta.url);

type Constructor<T> = new (...args: never[]) => T;

/** A class whose instances are the real class's, which is loaded at the first `new`. */
function loadedAtFirstUse<C extends Constructor<object>>(load: () => C): C {
  return class {
    constructor(...args: never[]) {
      // biome-ignore lint/correctness/noConstructorReturn: the instance is the real class's.
      return new (load())(...args);
    }
  } as unknown as C;
}

export const SocksProxyAgent = loadedAtFirstUse(
  () => (require('socks-proxy-agent') as typeof SocksProxy).SocksProxyAgent,
);
export const HttpProxyAgent = loadedAtFirstUse(() => (require('hpagent') as typeof Hpagent).HttpProxyAgent);
export const HttpsProxyAgent = loadedAtFirstUse(() => (require('hpagent') as typeof Hpagent).HttpsProxyAgent);
export const SocksClient = {
  createConnection: ((...args: Parameters<typeof Socks.SocksClient.createConnection>) =>
    (require('socks') as typeof Socks).SocksClient.createConnection(
      ...args,
    )) as typeof Socks.SocksClient.createConnection,
};
