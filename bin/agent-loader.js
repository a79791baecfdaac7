// How the agent's modules are loaded: the entry shim imports this before the CLI when it
// runs the agent, and benchmarks that measure agent code in a process of their own load it
// with `--import`, so both load modules the same way.
//   - ESM imports of node:http get a facade that does not load Node's bundled undici
//     (./http-facade.js);
//   - zod's locales are English alone (./zod-locales.js);
//   - the agent's TypeScript comes stripped from a cache on disk, so a start after the first
//     loads neither Node's type stripper nor its compile cache (./stripped-sources.js). The
//     directory is EDGEMESH_SOURCE_CACHE (the DaemonSet puts it in the node's state
//     directory, so it outlives the container), else edgemesh-source-cache under the
//     temporary directory; a start that cannot write it strips as Node does. An operator who
//     sets NODE_COMPILE_CACHE gets Node's own cache instead, which keeps stripped sources too.
import { installHttpFacade } from './http-facade.js';
import { installStrippedSources } from './stripped-sources.js';
import { installEnglishOnlyZod } from './zod-locales.js';

installHttpFacade();
installEnglishOnlyZod();
if (!process.env.NODE_COMPILE_CACHE) installStrippedSources();
