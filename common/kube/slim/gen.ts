// What client-node's KubeConfig (dist/config.js) imports from its generated package: the
// request configuration and the server description, without the hundreds of generated
// API classes and models that dist/gen/index.js also loads (agent/kube-client.ts).
export { createConfiguration } from '@kubernetes/client-node/dist/gen/configuration.js';
export { ServerConfiguration } from '@kubernetes/client-node/dist/gen/servers.js';
