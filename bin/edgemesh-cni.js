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
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...AGENT_V8_FLAGS, ...process.argv.slice(1)]);
}
// Type stripping still announces itself as experimental on some 24.x releases; the
// warning is noise for operators, every other warning is kept.
const { emitWarning } = process;
process.emitWarning = (warning, ...rest) => {
  const text = typeof warning === 'string' ? warning : warning?.message;
  if (typeof text === 'string' && text.includes('Type Stripping')) return;
  return emitWarning.call(process, warning, ...rest);
};
const { main } = await import('./cli.ts');
await main(process.argv);
