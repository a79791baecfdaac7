// client-node's auth providers for kubeconfig users with an `auth-provider` (oidc, azure,
// gcp), each loaded the first time such a user makes a request. KubeConfig creates one of
// each when its module loads, and the real modules import openid-client, oauth4webapi, jose
// and jsonpath-plus, which an agent (it authenticates with its service account's token)
// never uses.
import type { RequestOptions } from 'node:https';
import type { User } from '@kubernetes/client-node';

interface Provider {
  applyAuthentication(user: User, opts: RequestOptions): Promise<void>;
}

/** A provider for users whose auth-provider is `name`, the real one loaded at their first request. */
function loadedAtFirstRequest(name: string, load: () => Promise<Provider>) {
  return class {
    #real: Promise<Provider> | undefined;

    isAuthProvider(user: User | undefined): boolean {
      return user?.authProvider?.name === name;
    }

    async applyAuthentication(user: User, opts: RequestOptions): Promise<void> {
      this.#real ??= load();
      return (await this.#real).applyAuthentication(user, opts);
    }
  };
}

export const OpenIDConnectAuth = loadedAtFirstRequest('oidc', async () => {
  const { OpenIDConnectAuth } = await import('@kubernetes/client-node/dist/oidc_auth.js');
  return new OpenIDConnectAuth();
});
export const AzureAuth = loadedAtFirstRequest('azure', async () => {
  const { AzureAuth } = await import('@kubernetes/client-node/dist/azure_auth.js');
  return new AzureAuth();
});
export const GoogleCloudPlatformAuth = loadedAtFirstRequest('gcp', async () => {
  const { GoogleCloudPlatformAuth } = await import('@kubernetes/client-node/dist/gcp_auth.js');
  return new GoogleCloudPlatformAuth();
});
