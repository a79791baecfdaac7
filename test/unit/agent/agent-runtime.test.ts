// The entry shim re-executes the agent with its V8 flags and malloc settings
// (bin/agent-runtime.js); an operator's own value of either wins. The agent is started with a
// config that does not exist: it re-executes, loads its modules, then exits with 2. An
// --import module reports, in every process the CLI runs as, what that process got.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGENT_MALLOC_ENV, AGENT_V8_FLAGS, missingAgentEnv, missingAgentFlags } from '../../../bin/agent-runtime.js';

const CLI = join(import.meta.dirname, '../../../bin/edgemesh-cni.js');
const REPORT = `data:text/javascript,process.stderr.write('PROCESS '+JSON.stringify({trim:process.env.MALLOC_TRIM_THRESHOLD_??null,mmap:process.env.MALLOC_MMAP_THRESHOLD_??null,execArgv:process.execArgv})+'\\n')`;

interface Seen {
  trim: string | null;
  mmap: string | null;
  execArgv: string[];
}

function processesOf(args: string[], env: NodeJS.ProcessEnv = {}): Seen[] {
  const base: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const name of ['MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_']) if (!(name in env)) delete base[name];
  const r = spawnSync(process.execPath, ['--import', REPORT, CLI, ...args], {
    env: base,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return r.stderr
    .split('\n')
    .filter((l) => l.startsWith('PROCESS '))
    .map((l) => JSON.parse(l.slice(8)));
}

describe('the agent process settings', () => {
  it('name only what is not set already', () => {
    expect(missingAgentFlags([])).toEqual(AGENT_V8_FLAGS);
    expect(missingAgentFlags(['--scavenger-max-new-space-capacity-mb=16'])).toEqual(['--no-sparkplug']);
    // An operator's opposite of a flag is their own value of it, however it is spelt.
    expect(missingAgentFlags(['--sparkplug'])).toEqual(['--scavenger-max-new-space-capacity-mb=8']);
    expect(missingAgentFlags(['--no_sparkplug', '--scavenger_max_new_space_capacity_mb=4'])).toEqual([]);
    expect(missingAgentFlags(['--import', 'x.js'])).toEqual(AGENT_V8_FLAGS);
    expect(missingAgentEnv({})).toEqual(AGENT_MALLOC_ENV);
    const { MALLOC_TRIM_THRESHOLD_: _own, ...others } = AGENT_MALLOC_ENV;
    expect(missingAgentEnv({ MALLOC_TRIM_THRESHOLD_: '1048576' })).toEqual(others);
    expect(missingAgentEnv({ ...AGENT_MALLOC_ENV })).toEqual({});
  });

  it('are applied to the agent by one re-execution', { timeout: 60_000 }, () => {
    const runs = processesOf(['agent', '--config', '/nonexistent/agent.yaml']);
    expect(runs).toHaveLength(2);
    expect(runs[0]!.trim).toBeNull();
    expect(runs[1]!.trim).toBe(AGENT_MALLOC_ENV.MALLOC_TRIM_THRESHOLD_);
    expect(runs[1]!.mmap).toBe(AGENT_MALLOC_ENV.MALLOC_MMAP_THRESHOLD_);
    expect(runs[1]!.execArgv).toEqual(expect.arrayContaining(AGENT_V8_FLAGS));
  });

  it("keep an operator's own malloc setting", { timeout: 60_000 }, () => {
    const runs = processesOf(['agent', '--config', '/nonexistent/agent.yaml'], { MALLOC_TRIM_THRESHOLD_: '1048576' });
    expect(runs.at(-1)!.trim).toBe('1048576');
    expect(runs.at(-1)!.mmap).toBe(AGENT_MALLOC_ENV.MALLOC_MMAP_THRESHOLD_);
    expect(runs.at(-1)!.execArgv).toEqual(expect.arrayContaining(AGENT_V8_FLAGS));
  });

  it('are not applied to other commands', () => {
    const runs = processesOf(['--version']);
    expect(runs).toEqual([{ trim: null, mmap: null, execArgv: ['--import', REPORT] }]);
  });
});
