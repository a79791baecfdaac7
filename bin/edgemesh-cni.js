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
// The agent forwards packets through short-lived Buffers. V8 13.6 (Node 24) raised the
// young-generation cap from 8 to 32 MB, and since then V8 reclaims such Buffers by
// Mark-Compact instead of Scavenge (nodejs/node#61967): measured in the lab, tunnel
// throughput halved (1.54 → 0.80 Gbit/s) and forwarder CPU per GB doubled. The agent runs
// with the old cap. Re-executing here (execve: same pid, same fds) applies it wherever the
// agent is started — DaemonSet, image, lab, a hand-written unit — and an operator's own
// value of the flag wins.
const AGENT_V8_FLAGS = ['--scavenger-max-new-space-capacity-mb=8'];
const command = process.argv.slice(2).find((a) => !a.startsWith('-'));
if (
  command === 'agent' &&
  typeof process.execve === 'function' &&
  !process.execArgv.some((a) => a.startsWith('--scavenger-max-new-space-capacity-mb'))
) {
  process.execve(process.execPath, [
    process.execPath,
    ...process.execArgv,
    ...AGENT_V8_FLAGS,
    ...process.argv.slice(1),
  ]);
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
