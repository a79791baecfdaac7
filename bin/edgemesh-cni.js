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
// The agent loads its modules its own way (./agent-loader.js says how and why), and runs from
// its bundle while the bundle is current (./agent-bundle.js), else from its sources like every
// other command. EDGEMESH_AGENT_FROM_SOURCES=1 asks for the sources.
let cli = './cli.ts';
if (command === 'agent') {
  await import('./agent-loader.js');
  if (process.env.EDGEMESH_AGENT_FROM_SOURCES !== '1') {
    const { AGENT_BUNDLE_PATH, agentBundleStaleness } = await import('./agent-bundle.js');
    const stale = agentBundleStaleness();
    if (stale === undefined) cli = new URL(`../${AGENT_BUNDLE_PATH}`, import.meta.url).href;
    else
      process.stderr.write(
        `edgemesh-cni: ${stale}: the agent runs from its sources, about 9 MiB more memory ` +
          '(`npm run build:agent` builds the bundle again)\n',
      );
  }
}
const { main } = await import(cli);
await main(process.argv);
