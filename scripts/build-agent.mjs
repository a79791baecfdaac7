// Builds the agent as deployed: build/agent.js, its code and every dependency it imports in one
// ES module (esbuild), with a source map beside it and the manifest that tells the entry shim
// whether the bundle is still current (../bin/agent-bundle.js says why the agent runs from a
// bundle, and what happens when it is not current).
//   node scripts/build-agent.mjs [--if-stale] [--out-dir DIR]
//     --if-stale  build only when the bundle is missing or not current
//     --out-dir   write there instead of build/ (tests)
//
// What the bundle is made of, and why:
//   - entry bin/agent-cli.ts: the CLI with agent/'s commands alone;
//   - whitespace and comments out, identifiers as written (a stack trace still names every
//     function; `node --enable-source-maps` maps it back to the sources through
//     build/agent.js.map). Not esbuild's keepNames: it wraps every function and class in a
//     call that redefines its `name`, at every creation of a closure too (8 % of what an idle
//     lab agent allocated) and 1.1 MiB more V8 heap in an idle agent; the few names esbuild
//     renames to keep the bundle's top level unique (a digit appended) are only seen in logs;
//   - ASCII only: one character above Latin-1 and V8 keeps the whole 2.4 MB source two bytes
//     a character; license comments go to build/agent.js.LEGAL.txt;
//   - the same module routing as the agent's loader when it runs from its sources: client-node's
//     imports that ../common/kube/slim/redirects.ts names, and zod's locales as English alone
//     (../bin/zod-locales.js);
//   - the native addon and undici's files stay on disk: they are loaded through createRequire
//     at run time, beside the bundle's own `require` for the CommonJS packages inside it.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  AGENT_BUNDLE_PATH,
  AGENT_MANIFEST_PATH,
  agentBundleStaleness,
  agentManifest,
  REPO_ROOT,
} from '../bin/agent-bundle.js';
import { englishOnlyLocalesSource, zodLocaleModules } from '../bin/zod-locales.js';
import { clientNodeRedirects } from '../common/kube/slim/redirects.ts';

const { values: args } = parseArgs({
  options: { 'if-stale': { type: 'boolean' }, 'out-dir': { type: 'string' } },
});
const root = REPO_ROOT;
const outDir = args['out-dir'] ? resolve(args['out-dir']) : join(root, dirname(AGENT_BUNDLE_PATH));
const bundlePath = relative(root, join(outDir, basename(AGENT_BUNDLE_PATH)));
const manifestPath = relative(root, join(outDir, basename(AGENT_MANIFEST_PATH)));

if (args['if-stale']) {
  const stale = agentBundleStaleness(root, manifestPath);
  if (stale === undefined) process.exit(0);
  console.log(`[build-agent] ${stale}: building ${bundlePath}`);
}

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('[build-agent] esbuild is missing: run `npm ci` first');
  process.exit(1);
}

/** Routes the imports the agent's loader routes at run time, the same way. */
const agentModuleRouting = {
  name: 'agent-module-routing',
  setup(build) {
    const redirects = new Map(
      clientNodeRedirects().map((r) => [`${fileURLToPath(r.importer)}\0${r.specifier}`, fileURLToPath(r.target)]),
    );
    const zod = zodLocaleModules();
    const zodIndex = zod && fileURLToPath(zod.index);
    build.onResolve({ filter: /.*/ }, (args) => {
      const target = redirects.get(`${args.importer}\0${args.path}`);
      if (target) return { path: target };
      if (zodIndex && args.path.startsWith('.') && resolve(args.resolveDir, args.path) === zodIndex)
        return { path: 'zod-locales', namespace: 'edgemesh' };
      return undefined;
    });
    build.onLoad({ filter: /^zod-locales$/, namespace: 'edgemesh' }, () => ({
      contents: englishOnlyLocalesSource(fileURLToPath(zod.english)),
      resolveDir: root,
    }));
  },
};

const started = performance.now();
const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: [join(root, 'bin/agent-cli.ts')],
  outfile: join(root, bundlePath),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  minifyWhitespace: true,
  charset: 'ascii',
  legalComments: 'linked',
  sourcemap: 'linked',
  sourcesContent: false,
  banner: {
    js: "import { createRequire as __edgemeshCreateRequire } from 'node:module'; const require = __edgemeshCreateRequire(import.meta.url);",
  },
  plugins: [agentModuleRouting],
  metafile: true,
  write: false,
  logLevel: 'warning',
});

// Every file first under a temporary name, then renamed into place: an agent that starts
// meanwhile finds the old bundle and its manifest, or the new bundle and no current manifest.
mkdirSync(outDir, { recursive: true });
const place = (path, contents) => {
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, contents);
  renameSync(temporary, path);
};
for (const file of result.outputFiles) place(file.path, file.contents);
const inputs = Object.keys(result.metafile.inputs).filter((input) => !input.includes(':'));
inputs.push(relative(root, fileURLToPath(import.meta.url)));
place(join(root, manifestPath), `${JSON.stringify(agentManifest(root, inputs, bundlePath))}\n`);

const bytes = result.outputFiles.find((f) => f.path.endsWith('.js'))?.contents.length ?? 0;
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`[build-agent] ${bundlePath}: ${(bytes / 1e6).toFixed(1)} MB from ${inputs.length} files in ${seconds} s`);
