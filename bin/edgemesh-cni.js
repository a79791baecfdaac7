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
