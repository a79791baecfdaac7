// common/kube/client.ts loads client-node's KubeConfig, Watch and ListWatch without the
// generated API classes and models (most of the package's memory). A client-node upgrade
// that moves those imports would silently bring them back: this test notices.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const KUBE_CLIENT = join(import.meta.dirname, '../../../common/kube/client.ts');

/** The module URLs a fresh process loads for `source` (an ES module body). */
function loadedModules(source: string): string[] {
  const script = `
    import { registerHooks } from 'node:module';
    const urls = [];
    registerHooks({ load(url, context, next) { urls.push(url); return next(url, context); } });
    ${source}
    console.log(JSON.stringify(urls));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as string[];
}

/** What client-node's KubeConfig needs only for a cluster behind a proxy. */
const PROXY_PACKAGES = /\/(socks-proxy-agent|socks|hpagent|agent-base|ip-address|smart-buffer)\//;

const GENERATED = /@kubernetes\/client-node\/dist\/gen\/(index\.js|models\/|apis\/|types\/)/;

describe('kube-client', () => {
  it('loads KubeConfig, Watch and ListWatch but none of the generated APIs and models', { timeout: 60_000 }, () => {
    const urls = loadedModules(`
      const m = await import(${JSON.stringify(KUBE_CLIENT)});
      const kc = new m.KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'c', server: 'https://127.0.0.1:1' }],
        users: [{ name: 'u', token: 't' }],
        contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
        currentContext: 'x',
      });
      new m.ListWatch('/api/v1/nodes', new m.Watch(kc), async () => ({ items: [] }), false);
      new m.KubeClient(kc);`);
    expect(urls.some((u) => u.endsWith('/client-node/dist/config.js'))).toBe(true);
    expect(urls.some((u) => u.endsWith('/client-node/dist/cache.js'))).toBe(true);
    expect(urls.filter((u) => GENERATED.test(u))).toEqual([]);
  });

  it("loads undici's dispatchers and fetch without its entry point, and OpenID Connect only for a user who needs it", {
    timeout: 60_000,
  }, () => {
    // A JWT that expires in an hour: the provider uses it as it is, asking no issuer.
    const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const idToken = `${part({ alg: 'none' })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600 })}.sig`;
    const kubeconfig = (user: object) =>
      JSON.stringify({
        clusters: [{ name: 'c', server: 'https://127.0.0.1:1' }],
        users: [{ name: 'u', ...user }],
        contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
        currentContext: 'x',
      });
    const authorize = (user: object) => `
      const m = await import(${JSON.stringify(KUBE_CLIENT)});
      const { RequestContext } = await import('@kubernetes/client-node/dist/gen/http/http.js');
      const kc = new m.KubeConfig();
      kc.loadFromOptions(${kubeconfig(user)});
      const ctx = new RequestContext('https://127.0.0.1:1/api', 'GET');
      await kc.applySecurityAuthentication(ctx);
      if (ctx.getHeaders().Authorization !== ${JSON.stringify(`Bearer ${'token' in user ? user.token : idToken}`)}) process.exit(3);
`;
    const withToken = loadedModules(authorize({ token: 't' }));
    expect(
      withToken.filter((u) => /\/undici\/index\.js$|openid-client|oauth4webapi|\/jose\/|jsonpath-plus/.test(u)),
    ).toEqual([]);
    const withOidc = loadedModules(
      authorize({ authProvider: { name: 'oidc', config: { 'id-token': idToken, 'client-id': 'c' } } }),
    );
    expect(withOidc.some((u) => u.endsWith('/client-node/dist/oidc_auth.js'))).toBe(true);
    expect(withToken.filter((u) => PROXY_PACKAGES.test(u))).toEqual([]);
  });

  it("builds a kubeconfig's proxy agents with the real packages, loaded when a cluster names a proxy", {
    timeout: 60_000,
  }, () => {
    const agentFor = (proxyUrl: string, expected: string) => `
      const m = await import(${JSON.stringify(KUBE_CLIENT)});
      const kc = new m.KubeConfig();
      kc.loadFromOptions(${JSON.stringify({
        clusters: [{ name: 'c', server: 'https://127.0.0.1:1', proxyUrl: '@PROXY@' }],
        users: [{ name: 'u', token: 't' }],
        contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
        currentContext: 'x',
      }).replace('@PROXY@', proxyUrl)});
      const opts = {};
      await kc.applyToHTTPSOptions(opts);
      if (opts.agent?.constructor.name !== '${expected}') process.exit(3);`;
    expect(loadedModules(agentFor('http://127.0.0.1:1', 'HttpsProxyAgent')).some((u) => /\/hpagent\//.test(u))).toBe(
      true,
    );
    expect(
      loadedModules(agentFor('socks5://127.0.0.1:1', 'SocksProxyAgent')).some((u) => /\/socks-proxy-agent\//.test(u)),
    ).toBe(true);
  });

  it('leaves the whole package intact for a process that imports it', { timeout: 60_000 }, () => {
    const urls = loadedModules(`
      const slim = await import(${JSON.stringify(KUBE_CLIENT)});
      const full = await import('@kubernetes/client-node');
      const { ObjectSerializer } = await import('@kubernetes/client-node/dist/serializer.js');
      if (typeof full.CoreV1Api !== 'function' || full.KubeConfig !== slim.KubeConfig) process.exit(3);
      // The real serializer, not the selector stub ListWatch was given: it knows the models.
      const date = ObjectSerializer.deserialize('2026-11-30T12:00:00Z', 'Date');
      if (!(date instanceof Date)) process.exit(4);`);
    expect(urls.some((u) => /client-node\/dist\/gen\/models\/all\.js$/.test(u))).toBe(true);
  });
});
