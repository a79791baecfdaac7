// The one CLI, `edgemesh-cni <command>`. Each command's module is imported only when the
// command runs, so `--help` stays fast and the agent never loads the lab or the benchmarks.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

/** A command group contributed by one top-level package (agent/, lab/, bench/). */
export interface CommandModule {
  register(program: Command): void;
}

const commandModules: Array<() => Promise<CommandModule>> = [
  () => import('../agent/commands.ts'),
  () => import('../lab/commands.ts'),
  () => import('../bench/commands.ts'),
];

export async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('edgemesh-cni')
    .description('Pod-IP networking across cloud and edge networks behind NAT')
    .version(pkg.version, '-v, --version')
    .showHelpAfterError();
  for (const load of commandModules) (await load()).register(program);
  await program.parseAsync(argv);
}
