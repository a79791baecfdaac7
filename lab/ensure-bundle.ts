// The lab runs the agent as deployed, from its bundle (bin/agent-bundle.js): before its agents
// start, the bundle is built again if the sources changed since, so an edit is in the next
// lab's agents and the lab's figures are those of the bundle.
import { join } from 'node:path';
import { run } from '../common/exec.ts';
import { REPO_ROOT } from './state.ts';

/** Builds build/agent.js when it is missing or not current; returns what the build said (nothing when it was current). */
export async function ensureAgentBundle(): Promise<string> {
  const output = await run(process.execPath, [join(REPO_ROOT, 'scripts/build-agent.mjs'), '--if-stale'], {
    timeoutMs: 120_000,
  });
  return output.trim();
}
