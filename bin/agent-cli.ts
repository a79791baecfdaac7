// The entry point of the agent's bundle (build/agent.js, built by scripts/build-agent.mjs):
// the CLI with agent/'s commands alone, so the lab's and the benchmarks' code is not in it.
import { runProgram } from './program.ts';

export async function main(argv: string[]): Promise<void> {
  await runProgram(argv, [() => import('../agent/commands.ts')]);
}
