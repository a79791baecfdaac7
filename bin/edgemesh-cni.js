#!/usr/bin/env node
// Entry shim: checks the runtime, then loads the TypeScript CLI (Node >= 22.18 strips types
// natively, so the project ships its sources and needs no build step of its own).
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(
    `edgemesh-cni needs Node.js >= 22.18 (found ${process.versions.node}); ` +
      'inside the repository `npm run`/`npx` use the Node 24 that `npm ci` installs',
  );
  process.exit(1);
}
// The agent runs with its own V8 flags and malloc settings (./agent-runtime.js says why).
// Re-executing here (execve: same pid, same fds) applies them wherever the agent is started
// — DaemonSet, image, lab, a hand-written unit — and an operator's own value of a flag or
// variable wins.
const command = process.argv.slice(2).find((a) => !a.startsWith('-'));
if (command === 'agent' && typeof process.execve === 'function') {
  const { missingAgentEnv, missingAgentFlags } = await import('./agent-runtime.js');
  const flags = missingAgentFlags(process.execArgv);
  const env = missingAgentEnv(process.env);
  if (flags.length > 0 || Object.keys(env).length > 0)
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...flags, ...process.argv.slice(1)], {
      ...process.env,
      ...env,
    });
}
// Type stripping still announces itself as experimental on some 24.x releases; the
// warning is noise for operators, every other warning is kept.
const { emitWarning } = process;
process.emitWarning = (warning, ...rest) => {
  const text = typeof warning === 'string' ? warning : warning?.message;
  if (typeof text === 'string' && text.includes('Type Stripping')) return;
  return emitWarning.call(process, warning, ...rest);
};
// Node strips the agent's TypeScript with a WebAssembly build of swc that, once loaded,
// stays for the life of the process: about 20 MB of an idle agent's RSS (the module's source,
// its wasm memory and code). The compile cache keeps the stripped sources (and V8's code) on
// disk, so a start that finds them never loads the stripper. The directory is
// NODE_COMPILE_CACHE when set (the DaemonSet points it at the node's state directory, so it
// outlives the container), else node-compile-cache under the temporary directory; a start
// that cannot write it just runs without. The agent saves the cache once it is up
// (agent/startup-memory.ts).
if (command === 'agent') {
  const { enableCompileCache } = await import('node:module');
  enableCompileCache?.();
}
const { main } = await import('./cli.ts');
await main(process.argv);
