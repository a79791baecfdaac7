// The `edgemesh-cni` command line, built from the command groups it is given: ./cli.ts gives
// it every group, the agent's bundle (./agent-cli.ts) only agent/'s.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

/** A command group contributed by one top-level package (agent/, lab/, bench/). */
export interface CommandModule {
  register(program: Command): void;
}

export async function runProgram(argv: string[], commandModules: Array<() => Promise<CommandModule>>): Promise<void> {
  const program = new Command()
    .name('edgemesh-cni')
    .description('Pod-IP networking across cloud and edge networks behind NAT')
    .version(pkg.version, '-v, --version')
    .showHelpAfterError();
  for (const load of commandModules) (await load()).register(program);
  await program.parseAsync(argv);
}
