// Node's ESM view of a built-in module reads every export once, getters included, and
// node:http exports WebSocket, CloseEvent and MessageEvent as getters that load Node's whole
// bundled undici (nodejs/node#59686): any `import … from 'node:http'` — client-node's,
// agent-base's, our own — costs an agent that never opens a WebSocket about 2.3 MB of V8
// heap and 14 MB of RSS. require() does not read them. So ESM imports of node:http get a
// facade that takes the module as require() sees it and re-exports every name but those
// three: `import { WebSocket } from 'node:http'` fails at link time, loudly, instead of
// loading undici. Plain JavaScript: the entry shim installs it before it loads TypeScript.
import { registerHooks } from 'node:module';

const FACADE_URL = 'edgemesh:node-http';
/** The getters of node:http that load undici when read. */
const LAZY_HTTP_EXPORTS = new Set(['WebSocket', 'CloseEvent', 'MessageEvent']);

/** The facade's source: node:http as require() returns it, every export but the lazy ones. */
function httpFacadeSource() {
  const http = process.getBuiltinModule('node:http');
  const names = Object.keys(http).filter((name) => !LAZY_HTTP_EXPORTS.has(name) && /^[A-Za-z_$][\w$]*$/.test(name));
  return [
    "const http = process.getBuiltinModule('node:http');",
    'export default http;',
    ...names.map((name) => `export const ${name} = http.${name};`),
  ].join('\n');
}

/** Routes ESM imports of node:http to the facade; require() keeps the module itself. False where Node has no registerHooks. */
export function installHttpFacade() {
  if (typeof registerHooks !== 'function' || typeof process.getBuiltinModule !== 'function') return false;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      const isHttp = specifier === 'node:http' || specifier === 'http';
      if (isHttp && context.conditions?.includes('import')) return { url: FACADE_URL, shortCircuit: true };
      return nextResolve(specifier, context);
    },
    load(url, context, nextLoad) {
      if (url !== FACADE_URL) return nextLoad(url, context);
      return { format: 'module', source: httpFacadeSource(), shortCircuit: true };
    },
  });
  return true;
}
