// Which of client-node's own imports the agent redirects, and to what (../client.ts says
// why). One table for both ways the agent's modules are loaded: the resolve hook in
// ../client.ts (the agent run from its sources, tests, tools) and the bundler that builds
// the agent as deployed (scripts/build-agent.mjs).

/** An import of `specifier` by the module at `importer` loads `target` instead (file URLs). */
export interface ModuleRedirect {
  importer: string;
  specifier: string;
  target: string;
}

export function clientNodeRedirects(): ModuleRedirect[] {
  const dist = new URL('./', import.meta.resolve('@kubernetes/client-node/dist/config.js'));
  const slim = (file: string) => new URL(`./${file}`, import.meta.url).href;
  const from = (importer: string, specifier: string, target: string): ModuleRedirect => ({
    importer: new URL(importer, dist).href,
    specifier,
    target: slim(target),
  });
  return [
    from('config.js', './gen/index.js', 'gen.ts'),
    from('cache.js', './serializer.js', 'serializer.ts'),
    from('config.js', './oidc_auth.js', 'auth-providers.ts'),
    from('config.js', './azure_auth.js', 'auth-providers.ts'),
    from('config.js', './gcp_auth.js', 'auth-providers.ts'),
    from('config.js', 'socks-proxy-agent', 'proxy-agents.ts'),
    from('config.js', 'socks', 'proxy-agents.ts'),
    from('config.js', 'hpagent', 'proxy-agents.ts'),
    from('config.js', 'undici', 'undici.ts'),
    from('watch.js', 'undici', 'undici.ts'),
    from('gen/http/isomorphic-fetch.js', 'undici', 'undici.ts'),
  ];
}
