// The one CLI, `edgemesh-cni <command>`. Each command's module is imported only when the
// command runs, so `--help` stays fast and the agent never loads the lab or the benchmarks.
import { type CommandModule, runProgram } from './program.ts';

const commandModules: Array<() => Promise<CommandModule>> = [
  () => import('../agent/commands.ts'),
  () => import('../lab/commands.ts'),
  () => import('../bench/commands.ts'),
];

export async function main(argv: string[]): Promise<void> {
  await runProgram(argv, commandModules);
}
