// What the agent uses of undici: Agent and ProxyAgent (client-node's KubeConfig builds the
// TLS and proxy dispatchers of its requests with them) and fetch (client-node's Watch, the
// agent's REST calls in ../client.ts), without what undici's entry point loads besides —
// mock agents, cache stores, pools, interceptors, WebSocket, EventSource, cookies — which
// no agent request uses: 1.3 MB less V8 heap in a bare process (5.3 → 3.9 MB). Taken from
// the package's own files, as its entry point takes them; fetch is wrapped as there, so a
// failed request's stack shows its caller.
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const require = createRequire(import.meta.resolve('undici'));

export const Agent = require('./lib/dispatcher/agent') as typeof Undici.Agent;
export const ProxyAgent = require('./lib/dispatcher/proxy-agent') as typeof Undici.ProxyAgent;
const fetchImpl = (require('./lib/web/fetch') as { fetch: typeof Undici.fetch }).fetch;

export function fetch(input: Parameters<typeof Undici.fetch>[0], init?: Parameters<typeof Undici.fetch>[1]) {
  return fetchImpl(input, init).catch((err: unknown) => {
    if (err !== null && typeof err === 'object') Error.captureStackTrace(err, fetch);
    throw err;
  });
}
