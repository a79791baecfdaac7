// client-node's OpenID Connect auth provider (kubeconfig users with `auth-provider: oidc`),
// loaded the first time such a user makes a request. KubeConfig creates one when its module
// loads, and the real module imports openid-client, oauth4webapi and jose, which an agent
// (it authenticates with its service account's token) never uses.
import type { RequestOptions } from 'node:https';
import type { User } from '@kubernetes/client-node';
import type * as Real from '@kubernetes/client-node/dist/oidc_auth.js';

export class OpenIDConnectAuth {
  #real: Promise<Real.OpenIDConnectAuth> | undefined;

  isAuthProvider(user: User): boolean {
    return user.authProvider?.name === 'oidc';
  }

  async applyAuthentication(user: User, opts: RequestOptions): Promise<void> {
    this.#real ??= import('@kubernetes/client-node/dist/oidc_auth.js').then((m) => new m.OpenIDConnectAuth());
    return (await this.#real).applyAuthentication(user, opts);
  }
}
