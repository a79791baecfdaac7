// zod 4's core re-exports every one of its locales (`export * as locales`), so any import of
// zod loads about 60 locale modules, whose sources V8 then keeps: 0.9 MB of V8 heap in an
// agent that only ever speaks English (a bare process importing zod: 3.45 → 2.54 MB). The
// agent's loader routes that one re-export to a module with English alone; English stays
// the default messages (zod's classic schemas import it themselves). Anything that asks for
// another locale by name (`z.locales.fr`) gets undefined; the agent does not. Tests and tools
// without the agent's loader get the whole package; the agent's bundle is built with the
// same routing (scripts/build-agent.mjs). Plain JavaScript: the entry shim installs
// it before it loads any TypeScript.
import { registerHooks } from 'node:module';

const SLIM_URL = 'edgemesh:zod-locales';

/** zod's locale index and its English locale (file URLs), or undefined where zod is not installed. */
export function zodLocaleModules() {
  try {
    return {
      index: import.meta.resolve('zod/v4/locales/index.js'),
      english: import.meta.resolve('zod/v4/locales/en.js'),
    };
  } catch {
    return undefined;
  }
}

/** What stands in for the locale index: English alone, imported from `english`. */
export function englishOnlyLocalesSource(english) {
  return `export { default as en } from ${JSON.stringify(english)};`;
}

/** Routes zod's locale index to English alone. False where Node has no registerHooks or zod is not installed. */
export function installEnglishOnlyZod() {
  const modules = zodLocaleModules();
  if (typeof registerHooks !== 'function' || modules === undefined) return false;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      const resolved = nextResolve(specifier, context);
      return resolved.url === modules.index ? { url: SLIM_URL, shortCircuit: true } : resolved;
    },
    load(url, context, nextLoad) {
      if (url !== SLIM_URL) return nextLoad(url, context);
      return { format: 'module', source: englishOnlyLocalesSource(modules.english), shortCircuit: true };
    },
  });
  return true;
}
